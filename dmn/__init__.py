"""dmn: sleep-time memory consolidation for world-model agents.

Agents log their System 2 deliberation (`EpisodeLogger`) and ask System 1 first at run time
(`Reflexes`), or do both in one call a step (`Decider`): that is the agent's side, `dmn.wake`, and
all that `import dmn` loads. Every night dmn ingests the logs into a DuckDB/Parquet episode store
(`dmn.lake`) and distils them into System 1 reflexes (`dmn.sleep`), published as versioned bundles
(`dmn.bundle`); `dmn.ops` runs it unattended. ARCHITECTURE.md draws the whole house.
"""

from dmn.errors import DmnError
from dmn.home import Home
from dmn.version import __version__
from dmn.wake.client import ANY_ENCODER, Asked, Imagined, Proposal, Reflex, Reflexes
from dmn.wake.decider import Candidate, Decider, Decision, Plan
from dmn.wake.logger import EpisodeLogger

__all__ = ["ANY_ENCODER", "Asked", "Candidate", "Decider", "Decision", "DmnError", "EpisodeLogger", "Home", "Imagined",
           "Plan", "Proposal", "Reflex", "Reflexes", "__version__"]
