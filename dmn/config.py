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
import math
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


SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B", re.IGNORECASE)
"""A size as DuckDB reads it: 2GB (powers of 1000), 512MiB (powers of 1024)."""


def size_bytes(text: str) -> int:
    """The bytes a size such as '2GB' or '512MiB' stands for, as DuckDB counts them."""
    number, unit, binary = SIZE.fullmatch(text.strip()).groups()
    return int(float(number) * (1024 if binary else 1000) ** ("KMGT".index(unit.upper()) + 1 if unit else 0))


@dataclass
class IngestSettings:
    max_line_bytes: int = 16 * 2**20
    """Longest accepted line; a longer one is quarantined without being parsed."""
    chunk_bytes: int = 128 * 2**20
    """Bytes of complete lines handed to DuckDB in one pass (at most a quarter of `memory_limit`)."""
    settle_seconds: float = 3600.0
    """An unterminated, unparseable last line is waited for this long before it is quarantined as truncated."""
    future_skew_seconds: float = 300.0
    """A timestamp further than this in the future is quarantined."""
    memory_limit: str = "2GB"
    """DuckDB's memory limit during ingest; beyond it the batch spills to `<home>/tmp`. The process needs
    about 0.3-0.5 GB more (libraries, read and write buffers), however large the files."""


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
class WorldSettings:
    latent_dim: int = 128
    """Dimension of the reference world model's latent state z."""
    hidden: int = 128
    """Width of the hidden layers of its networks."""
    explore_steps: int = 8000
    """Transitions of random exploration collected before the first training."""
    sticky: float = field(default=4.0, metadata={"min": 1})
    """Mean run of a repeated random exploration action, so exploration wanders farther than coin flips."""
    restarts: float = field(default=0.5, metadata={"min": 0, "max": 1})
    """Share of the first exploration's episodes that restart from a rarely seen state (Go-Explore).

    The random play of each round always restarts from rare states, the planner's included."""
    rollout: int = 5
    """Steps the predictor is unrolled in training, each compared with the target encoder's latent."""
    updates: int = 1500
    """Gradient steps of the first training."""
    batch: int = field(default=256, metadata={"min": 2})
    """Training windows per gradient step."""
    lr: float = 1e-3
    """Adam learning rate."""
    ema: float = field(default=0.99, metadata={"max": 1})
    """Momentum of the target encoder (an exponential moving average of the encoder)."""
    gamma: float = field(default=0.9, metadata={"below": 1})
    """Discount of the value head's return-to-go."""
    variance_weight: float = 1.0
    """VICReg variance term: keeps every latent dimension spread out, so the latents cannot collapse."""
    covariance_weight: float = 0.04
    """VICReg covariance term: decorrelates the latent dimensions."""
    rounds: int = field(default=1, metadata={"min": 0})
    """Rounds of data aggregation after the first training: the planner collects, then training goes on."""
    round_steps: int = 2000
    """Transitions the planner collects per round."""
    round_updates: int = 500
    """Gradient steps after each round."""
    seed: int = field(default=1, metadata={"min": 0})
    """Seed of the world model's training (the model is cached per environment and settings)."""


@dataclass
class PlannerSettings:
    horizon: int = 15
    """Steps System 2 imagines ahead."""
    samples: int = 128
    """Action sequences imagined per iteration, split evenly over the first actions."""
    iterations: int = 1
    """Cross-entropy-method iterations: each after the first refits the sampling distribution to the elites."""
    elites: int = 32
    """Best sequences of an iteration: the next iteration samples around them, and a candidate first
    action scores the mean of its share of them (a mean of many is a smooth function of the state)."""
    value_weight: float = 0.3
    """Weight of the values of the imagined states in a sequence's score (the rest is imagined reward)."""
    veto: float = field(default=0.5, metadata={"max": 1})
    """A first action is vetoed when its best imagined future fails (ends an episode early) with this probability."""
    seed: int = field(default=0, metadata={"min": 0})
    """Seed of System 2's random numbers, drawn afresh for every search: the same state gets the same answer."""


@dataclass
class ConsolidateSettings:
    half_life_days: float = 7.0
    """Age at which a decision counts half as much as today's: older experience fades."""
    window_days: float = 30.0
    """Only decisions from this many days back are read: bounds the nightly work."""
    max_decisions: int = 1_000_000
    """At most this many decisions (the newest) are read per world."""
    situations: int = field(default=0, metadata={"min": 0})
    """Number of situations (k-means clusters of decision states); 0 picks it from the data size."""
    outcome_types: int = 16
    """Number of outcome types (k-means clusters of imagined consequences)."""
    pca_dims: int = field(default=32, metadata={"min": 0})
    """Search situations in this many PCA dimensions, then compare the nearest few by exact distance:
    fast lookups at large d. 0 (or at least the latents' size) searches exactly."""
    min_support: float = 3.0
    """A situation needs this much (age-weighted) experience before System 1 answers from it."""
    radius_quantile: float = field(default=0.95, metadata={"max": 1})
    """A situation's novelty radius: this quantile of its members' distances to its centre."""
    policy_reach: float = field(default=2.0, metadata={"min": 1})
    """The policy answers only within this many novelty radii of a known situation."""
    demote_audits: int = 2
    """A situation whose audits (this many at least) agreed with System 2 less often than the precision
    target is demoted: System 1 stays silent there and System 2 decides."""
    avoid_veto_rate: float = field(default=0.5, metadata={"max": 1})
    """An action System 2 vetoed at least this often in a situation goes on its avoid list."""
    policy_hidden: int = 256
    """Width of the distilled policy network's hidden layers."""
    policy_batch: int = 128
    """Minibatch size of the policy network's training."""
    policy_epochs: int = 30
    """Maximum training epochs of the policy network (it stops early on validation loss)."""
    soft_weight: float = field(default=0.5, metadata={"min": 0, "max": 1})
    """Share of the policy's target that comes from System 2's scores (soft) rather than its choice (hard)."""
    precision_target: float = field(default=0.95, metadata={"max": 1})
    """System 1 must agree with System 2 at least this often when it answers; thresholds are set for it."""
    precision_z: float = field(default=1.0, metadata={"min": 0})
    """Thresholds must meet the precision target this many standard errors down (a Wilson lower bound) on
    validation data, so that a small validation set cannot pass them by luck."""
    coverage_tolerance: float = field(default=0.02, metadata={"min": 0, "max": 1})
    """A new bundle may cover this much less of the held-out steps than the published one does and still replace it."""
    validation_share: float = field(default=0.15, metadata={"max": 0.5})
    """Share of the labelled steps (whole recent episodes, dealt alternately with the test ones) that set
    thresholds and calibration."""
    test_share: float = field(default=0.15, metadata={"max": 0.5})
    """Share of the labelled steps (whole recent episodes) held out to report the metrics the gate uses."""
    keep: int = 5
    """Published bundles kept per world (for rollback)."""
    seed: int = field(default=0, metadata={"min": 0})
    """Seed of clustering and training."""


@dataclass
class Settings:
    ingest: IngestSettings = field(default_factory=IngestSettings)
    """How logs are read."""
    lar: LarSettings = field(default_factory=LarSettings)
    """How Lár audit files map onto episodes."""
    dims: dict[str, int] = field(default_factory=dict)
    """Latent dimension per world, when known up front; otherwise the first ingested batch sets it."""
    world: WorldSettings = field(default_factory=WorldSettings)
    """How the reference world model (`dmn world`) is trained."""
    planner: PlannerSettings = field(default_factory=PlannerSettings)
    """How the reference world's System 2 plans."""
    consolidate: ConsolidateSettings = field(default_factory=ConsolidateSettings)
    """How the night distils System 2's simulations into System 1's reflexes."""

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
            ingest=section(IngestSettings, data.pop("ingest", {}), path, "ingest"),
            lar=section(LarSettings, data.pop("lar", {}), path, "lar"),
            dims=_dims(data.pop("dims", {}), path),
            world=section(WorldSettings, data.pop("world", {}), path, "world"),
            planner=section(PlannerSettings, data.pop("planner", {}), path, "planner"),
            consolidate=section(ConsolidateSettings, data.pop("consolidate", {}), path, "consolidate"),
        )
        if data:
            raise DmnError(f"{path}: unknown section(s) {sorted(data)}; "
                           "known: ingest, lar, dims, world, planner, consolidate")
        if SIZE.fullmatch(settings.ingest.memory_limit) is None:
            raise DmnError(f"{path}: [ingest] memory_limit must be a size such as '2GB', got {settings.ingest.memory_limit!r}")
        if settings.lar.hmac_secret is None:
            settings.lar.hmac_secret = os.environ.get("DMN_LAR_HMAC_SECRET") or None
        return settings


def section(kind: type, values: Any, path: Path, name: str) -> Any:
    """`values` (a TOML table) as a `kind` settings dataclass, checked field by field: unknown keys, wrong
    types and out-of-range numbers are one DmnError naming `path` and `[name]`. Job files use it too."""
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
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            bounds = fields[key].metadata  # "min" (inclusive; default: above 0), "max" (inclusive), "below"
            low, high, below = bounds.get("min"), bounds.get("max", math.inf), bounds.get("below", math.inf)
            if (value <= 0 if low is None else value < low) or value > high or value >= below:
                allowed = ["positive" if low is None else f"at least {low}"]
                allowed += [f"at most {high}"] * (high < math.inf) + [f"below {below}"] * (below < math.inf)
                raise DmnError(f"{path}: [{name}] {key} must be {' and '.join(allowed)}, got {value!r}")
    return kind(**values)


def _dims(values: Any, path: Path) -> dict[str, int]:
    if not isinstance(values, dict):
        raise DmnError(f"{path}: [dims] must be a table of world = dimension")
    for world, dim in values.items():
        if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
            raise DmnError(f"{path}: [dims] {world!r} must be a positive integer, got {dim!r}")
    return dict(values)
