"""The version of dmn: in every bundle manifest, and what `pip` installs (pyproject.toml reads it here)."""

__version__ = "0.1.0"
