"""dmn: sleep-time memory consolidation for world-model agents.

Agents log their System 2 deliberation (`EpisodeLogger`) and ask System 1 first at run time
(`Reflexes`): that is the agent's side, `dmn.wake`, and all that `import dmn` loads. Every night dmn
ingests the logs into a DuckDB/Parquet episode store (`dmn.lake`) and distils them into System 1
reflexes (`dmn.sleep`), published as versioned bundles (`dmn.bundle`); `dmn.ops` runs it unattended.
ARCHITECTURE.md draws the whole house.
"""

from dmn.errors import DmnError
from dmn.home import Home
from dmn.version import __version__
from dmn.wake.client import Imagined, Proposal, Reflex, Reflexes
from dmn.wake.logger import EpisodeLogger

__all__ = ["DmnError", "EpisodeLogger", "Home", "Imagined", "Proposal", "Reflex", "Reflexes", "__version__"]
