"""dmn: sleep-time memory consolidation for world-model agents.

Agents log their System 2 deliberation (`EpisodeLogger`); every night dmn ingests the logs
into a DuckDB/Parquet episode store (`ingest`, `Store`) and distils them into System 1 reflexes,
which agents ask first at run time (`Reflexes`).
"""

from dmn.client import Imagined, Reflex, Reflexes
from dmn.errors import DmnError
from dmn.home import Home
from dmn.logger import EpisodeLogger

__version__ = "0.1.0"
__all__ = ["DmnError", "EpisodeLogger", "Home", "Imagined", "Reflex", "Reflexes", "__version__"]
