"""Settings: every knob has a default, and `<home>/dmn.toml` may override any of them.

Example `dmn.toml`::

    [ingest]
    max_line_bytes = 16777216

    [dims]
    "CartPole-v1" = 128

    [lar]
    world = "tool-agent"
    encoder = "vjepa2-ac@1"
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmn.errors import DmnError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass
class IngestSettings:
    max_line_bytes: int = 16 * 2**20
    """Longest accepted line; a longer one is quarantined without being parsed."""
    chunk_bytes: int = 128 * 2**20
    """Bytes of complete lines handed to DuckDB in one pass; bounds ingest memory."""
    settle_seconds: float = 3600.0
    """An unterminated, unparseable last line is waited for this long before it is quarantined as truncated."""
    future_skew_seconds: float = 300.0
    """A timestamp further than this in the future is quarantined."""
    memory_limit: str = "2GB"
    """DuckDB's memory limit during ingest; beyond it DuckDB spills to `<home>/tmp`."""


@dataclass
class LarSettings:
    world: str = "lar"
    """World name given to episodes ingested from Lár audit files."""
    encoder: str = "unknown"
    """Encoder version given to episodes ingested from Lár audit files."""
    latent_key: str = "latent"
    """State key holding the current latent state."""
    candidate_key: str = "candidate_action"
    """State key holding the action System 2 is imagining."""
    predicted_key: str = "predicted_latent"
    """State key holding the imagined next latent."""
    score_key: str = "score"
    """State key holding the imagined action's score; a step that sets it is a simulation."""
    vetoed_key: str = "vetoed"
    """State key that is true when the router rejected the imagined action."""
    action_key: str = "action_taken"
    """State key holding the action taken; a step that sets it is a decision."""
    reward_key: str = "reward"
    """State key holding the reward of the last action; a step that sets it is an outcome."""
    hmac_secret: str | None = None
    """Lár's HMAC secret; when set (or DMN_LAR_HMAC_SECRET), unsigned or mis-signed files are quarantined."""


@dataclass
class Settings:
    ingest: IngestSettings = field(default_factory=IngestSettings)
    """How logs are read."""
    lar: LarSettings = field(default_factory=LarSettings)
    """How Lár audit files map onto episodes."""
    dims: dict[str, int] = field(default_factory=dict)
    """Latent dimension per world, when known up front; otherwise the first ingested batch sets it."""

    @classmethod
    def load(cls, path: Path) -> "Settings":
        """Read `dmn.toml` at `path` (absent means all defaults); unknown keys are an error."""
        data: dict[str, Any] = {}
        if path.exists():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise DmnError(f"{path}: not valid TOML ({exc})") from None
            except OSError as exc:
                raise DmnError(f"{path}: cannot read it ({exc.strerror})") from None
        settings = cls(
            ingest=_section(IngestSettings, data.pop("ingest", {}), path, "ingest"),
            lar=_section(LarSettings, data.pop("lar", {}), path, "lar"),
            dims=_dims(data.pop("dims", {}), path),
        )
        if data:
            raise DmnError(f"{path}: unknown section(s) {sorted(data)}; known: ingest, lar, dims")
        if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]?i?B", settings.ingest.memory_limit, re.IGNORECASE):
            raise DmnError(f"{path}: [ingest] memory_limit must be a size such as '2GB', got {settings.ingest.memory_limit!r}")
        if settings.lar.hmac_secret is None:
            settings.lar.hmac_secret = os.environ.get("DMN_LAR_HMAC_SECRET") or None
        return settings


def _section(kind: type, values: Any, path: Path, name: str) -> Any:
    if not isinstance(values, dict):
        raise DmnError(f"{path}: [{name}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise DmnError(f"{path}: unknown setting(s) in [{name}]: {unknown}; known: {sorted(fields)}")
    defaults = kind()
    for key, value in values.items():
        expected = type(getattr(defaults, key)) if getattr(defaults, key) is not None else str
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise DmnError(f"{path}: [{name}] {key} must be {expected.__name__}, got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise DmnError(f"{path}: [{name}] {key} must be positive, got {value!r}")
    return kind(**values)


def _dims(values: Any, path: Path) -> dict[str, int]:
    if not isinstance(values, dict):
        raise DmnError(f"{path}: [dims] must be a table of world = dimension")
    for world, dim in values.items():
        if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
            raise DmnError(f"{path}: [dims] {world!r} must be a positive integer, got {dim!r}")
    return dict(values)
