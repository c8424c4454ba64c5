"""Settings: every knob has a default, and `<home>/dmn.toml` may override any of them.

Example `dmn.toml`::

    [ingest]
    max_line_bytes = 16777216

    [dims]
    "CartPole-v1" = 128

    [lar]
    world = "tool-agent"
    encoder = "vjepa2-ac@1"

Each section is a dataclass built on `Section`: every field says its type, and every number its bounds
(`bounded`), where it is declared; a section checks them, and its rules across fields (`check`), whenever
one is made, from a file (`section`, which names the file and the section in its one-line error) or in
code (`dataclasses.replace` included). Job files (`dmn.ops.jobs`) and the reference world's sections
(`dmn.worlds.settings`) are checked the same way.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import os
import re
import types
import typing
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


# -- the mechanism ---------------------------------------------------------------------------------


BOUNDS = {"ge": (operator.ge, "at least {:g}"), "gt": (operator.gt, "above {:g}"), "le": (operator.le, "at most {:g}"),
          "lt": (operator.lt, "below {:g}")}


def bounded(default: float, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None) -> Any:
    """A numeric setting with the range it must lie in: at least `ge`, above `gt`, at most `le`, below `lt`."""
    bounds = {name: bound for name, bound in {"ge": ge, "gt": gt, "le": le, "lt": lt}.items() if bound is not None}
    return field(default=default, metadata={"bounds": bounds})


def choice(default: str, options: tuple[str, ...]) -> Any:
    """A text setting that must be one of `options`."""
    return field(default=default, metadata={"choices": options})


class Section:
    """What every settings dataclass is built on: its fields are checked when it is made."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            setattr(self, f.name, _checked(f, _types(type(self))[f.name], getattr(self, f.name)))
        self.check()

    def check(self) -> None:
        """Rules across fields: raise ValueError saying which setting is wrong and why."""


@functools.cache
def _types(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind)


def _checked(f: dataclasses.Field, kind: Any, value: Any) -> Any:
    """`value` for the field `f` of type `kind`, checked (an int where a float goes becomes a float)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None
        if value is None:
            return None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, typing.get_origin(kind) or kind) or isinstance(value, bool) != (kind is bool):
        raise ValueError(f"{f.name} must be {kind.__name__}, got {value!r}")
    if kind in (int, float):
        if "bounds" not in f.metadata:
            raise TypeError(f"setting {f.name} declares no bounds (use config.bounded)")
        bounds = f.metadata["bounds"]
        if not math.isfinite(value) or not all(BOUNDS[name][0](value, bound) for name, bound in bounds.items()):
            said = ["positive" if (name, bound) == ("gt", 0) else BOUNDS[name][1].format(bound)
                    for name, bound in bounds.items()]
            raise ValueError(f"{f.name} must be {' and '.join(said) or 'finite'}, got {value!r}")
    if "choices" in f.metadata and value not in f.metadata["choices"]:
        raise ValueError(f"{f.name} must be one of {', '.join(f.metadata['choices'])}, got {value!r}")
    return value


def section(kind: type, values: Any, path: Path | str, name: str) -> Any:
    """`values` (a TOML table) as a `kind` settings dataclass; unknown keys, wrong types, out-of-range
    numbers and broken rules across fields are one DmnError naming `path` and `[name]`."""
    if not isinstance(values, dict):
        raise DmnError(f"{path}: [{name}] must be a table")
    known = [f.name for f in dataclasses.fields(kind)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise DmnError(f"{path}: unknown setting(s) in [{name}]: {unknown}; known: {sorted(known)}")
    try:
        return kind(**values)
    except ValueError as exc:
        raise DmnError(f"{path}: [{name}] {exc}") from None


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML file at `path` as a dict (absent: empty); a file that cannot be read is one DmnError."""
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DmnError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise DmnError(f"{path}: cannot read it ({exc.strerror})") from None


# -- the sections ---------------------------------------------------------------------------------------


@dataclass
class IngestSettings(Section):
    max_line_bytes: int = bounded(16 * 2**20, ge=1)
    """Longest accepted line; a longer one is quarantined without being parsed."""
    chunk_bytes: int = bounded(128 * 2**20, ge=1)
    """Bytes of complete lines handed to DuckDB in one pass (at most a quarter of `memory_limit`)."""
    settle_seconds: float = bounded(3600.0, ge=0)
    """An unterminated, unparseable last line is waited for this long before it is quarantined as truncated."""
    future_skew_seconds: float = bounded(300.0, ge=0)
    """A timestamp further than this in the future is quarantined."""
    memory_limit: str = "2GB"
    """DuckDB's memory limit during ingest; beyond it the batch spills to `<home>/tmp`. The process needs
    about 0.3-0.5 GB more (libraries, read and write buffers), however large the files."""
    inbox_retention: str = choice("delete", ("delete", "archive", "keep"))
    """What becomes of an inbox file once a committed batch consumed all of it and `retention_days` have
    passed: deleted (the lake holds its records), moved under `<home>/archive/`, or kept. A file with bytes
    no batch consumed is never touched."""
    retention_days: float = bounded(7.0, ge=0)
    """Days after the commit that consumed a file whole before `inbox_retention` applies to it."""
    compact_batches: int = bounded(8, ge=0)
    """After an ingest, the oldest run of this many consecutive batches of one level that fit in `compact_mib` is
    merged into one of the next level, so that a year of nights reads as fast as a week (0 or 1: never)."""
    compact_mib: int = bounded(128, ge=1)
    """The most a merged batch's files may hold, in MiB; a batch this large is left as it is."""

    def check(self) -> None:
        if SIZE.fullmatch(self.memory_limit) is None:
            raise ValueError(f"memory_limit must be a size such as '2GB', got {self.memory_limit!r}")


@dataclass
class LarSettings(Section):
    world: str = "lar"
    """World name given to episodes ingested from Lár audit files (unless a run's summary names its own)."""
    encoder: str = "unknown"
    """Encoder version given to episodes ingested from Lár audit files (unless a run's summary names its own)."""
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
    source_key: str = "decided_by"
    """State key saying who decided the action: "system1" (a reflex) or "system2" (absent: system2)."""
    confidence_key: str = "confidence"
    """State key holding System 1's confidence in the action it decided."""
    latency_key: str = "latency_ms"
    """State key holding what deciding the action cost, in milliseconds."""
    withheld_key: str = "withheld_action"
    """State key holding, on an audit, the action System 1 withheld so that System 2 decided."""
    reward_key: str = "reward"
    """State key holding the reward of the last action; a step that sets it is an outcome."""
    hmac_secret: str | None = None
    """Lár's HMAC secret; when set (or DMN_LAR_HMAC_SECRET), unsigned or mis-signed files are quarantined."""


@dataclass
class ConsolidateSettings(Section):
    half_life_days: float = bounded(7.0, gt=0)
    """Age at which a decision counts half as much as today's: older experience fades."""
    window_days: float = bounded(30.0, gt=0)
    """Only decisions from this many days back are read: bounds the nightly work."""
    max_decisions: int = bounded(1_000_000, ge=1)
    """At most this many decisions (the newest) are read per world."""
    situations: int = bounded(0, ge=0)
    """Number of situations (k-means clusters of decision states); 0 picks it from the data size."""
    outcome_types: int = bounded(16, ge=1)
    """Number of outcome types (k-means clusters of imagined consequences)."""
    pca_dims: int = bounded(32, ge=0)
    """Search situations in this many PCA dimensions, then compare the nearest few by exact distance:
    fast lookups at large d. 0 (or at least the latents' size) searches exactly."""
    min_support: float = bounded(3.0, ge=0)
    """A situation needs this much (age-weighted) experience before System 1 answers from it."""
    radius_quantile: float = bounded(0.95, gt=0, le=1)
    """A situation's novelty radius: this quantile of its members' distances to its centre."""
    core_quantile: float = bounded(0.5, gt=0, le=1)
    """The table answers for states within this quantile of a situation's members' distances to its centre
    (its core), and its agreement is measured there: at a situation's edge, where it meets others, the
    best action can be another's. Beyond the core, the policy answers."""
    policy_reach: float = bounded(2.0, ge=1)
    """The policy answers only within this many novelty radii of a known situation."""
    demote_audits: int = bounded(2, ge=1)
    """A situation whose audits (this many at least) agreed with System 2 less often than the precision
    target is demoted: System 1 stays silent there and System 2 decides."""
    avoid_veto_rate: float = bounded(0.5, gt=0, le=1)
    """An action System 2 vetoed at least this often in a situation goes on its avoid list."""
    policy_hidden: int = bounded(256, ge=1)
    """Width of the distilled policy network's hidden layers."""
    policy_batch: int = bounded(128, ge=1)
    """Minibatch size of the policy network's training."""
    policy_epochs: int = bounded(30, ge=1)
    """Maximum training epochs of the policy network (it stops early on validation loss)."""
    block_rows: int = bounded(8192, ge=1)
    """What is computed for every state (its situation, System 1's answers) is computed this many rows at a
    time: on the Ray engine, by tasks of whole blocks, so a night of n steps runs on n / block_rows workers
    at most. Both engines group rows alike, and so make the same bundle to the bit."""
    policy_sample: int = bounded(200_000, ge=1)
    """The policy network learns from at most this many training steps, and checks itself on at most as many
    validation steps, drawn where there are more: only their states are held in memory (1.1 GB each at a
    1,408-d latent)."""
    score_tolerance: float = bounded(0.25, ge=0)
    """An answer is right where its action is as good as System 2's choice by System 2's own scores: a candidate
    it did not veto that scored within this many stakes of its best (a stake: the world's median spread between
    System 2's best and worst candidates). 0: only its choice and exact ties are right."""
    action_tolerance: float = bounded(0.1, gt=0)
    """In a continuous world, an answer is right within this distance of System 2's action: the root mean
    square of their differences, each dimension in units of the range its actions were seen to span."""
    soft_weight: float = bounded(0.5, ge=0, le=1)
    """Share of System 1's targets (what the policy learns, and the table's choice) that comes from where each
    action scored between the step's worst candidate and System 2's best (soft) rather than from which actions
    were acceptable (hard)."""
    precision_target: float = bounded(0.95, gt=0, le=1)
    """System 1 must agree with System 2 at least this often when it answers; thresholds are set for it."""
    min_confidence: float = bounded(0.8, ge=0, le=1)
    """Once System 1 has been seen live, the policy answers only where its calibrated chance of being right is at
    least this (before, the precision target): the target is met on average, and an average met with answers
    more often wrong than right holds only for the held-out mix of states, not where those answers lead."""
    precision_z: float = bounded(1.0, ge=0)
    """Thresholds must meet the precision target this many standard errors down (a Wilson lower bound) on
    validation data, so that a small validation set cannot pass them by luck."""
    coverage_tolerance: float = bounded(0.02, ge=0, le=1)
    """A new bundle may cover this much less of the held-out steps than the published one does and still replace it."""
    validation_share: float = bounded(0.15, gt=0, le=0.5)
    """Share of the labelled steps (whole recent episodes, dealt alternately with the test ones) that set
    thresholds and calibration."""
    test_share: float = bounded(0.15, gt=0, le=0.5)
    """Share of the labelled steps (whole recent episodes) held out to report the metrics the gate uses."""
    keep: int = bounded(5, ge=1)
    """Published bundles kept per world (for rollback)."""
    seed: int = bounded(0, ge=0)
    """Seed of clustering and training."""

    def check(self) -> None:
        if self.validation_share + self.test_share >= 1:
            raise ValueError(f"validation_share + test_share must be below 1 (something must be left to train on), "
                             f"got {self.validation_share} + {self.test_share}")


ENGINES = ("local", "ray")
"""What can run ingest and the night's reading (`EngineSettings.kind`, `--engine`)."""


@dataclass
class EngineSettings(Section):
    kind: str = choice("local", ENGINES)
    """What runs ingest and reads the night's window: "local", this process (DuckDB on this machine's cores), or
    "ray", tasks on a Ray cluster, every node of which must see the home at the same path (a shared filesystem)."""
    address: str = ""
    """The Ray cluster's address (host:port of its head); empty: `RAY_ADDRESS`, as for Ray's own tools."""
    shard_mib: int = bounded(256, ge=1)
    """With Ray, inbox files are parsed in tasks of about this many MiB of new bytes each."""
    key_shards: int = bounded(0, ge=0)
    """With Ray, the rules across records, and the night's reading, run in this many tasks, each over its share
    of the episode ids; 0: one per CPU of the cluster."""


@dataclass
class Settings:
    """A home's settings (`Home.settings()`)."""

    ingest: IngestSettings = field(default_factory=IngestSettings)
    """How logs are read."""
    lar: LarSettings = field(default_factory=LarSettings)
    """How Lár audit files map onto episodes."""
    dims: dict[str, int] = field(default_factory=dict)
    """Latent dimension per world, when known up front; otherwise the first ingested batch sets it."""
    actions: dict[str, int] = field(default_factory=dict)
    """Action kind per world, when known up front ("discrete" in dmn.toml, 0 here: labels; a number d: vectors
    of d values); otherwise the first ingested batch sets it."""
    consolidate: ConsolidateSettings = field(default_factory=ConsolidateSettings)
    """How the night distils System 2's simulations into System 1's reflexes."""
    engine: EngineSettings = field(default_factory=EngineSettings)
    """Where ingest runs: this process, or a Ray cluster."""

    ELSEWHERE = ("world", "planner")
    """Sections of dmn.toml that their own part of dmn reads and checks: the reference world's
    (`dmn.worlds.settings`), which needs torch and gymnasium."""

    @classmethod
    def load(cls, path: Path) -> Settings:
        """Read `dmn.toml` at `path` (absent means all defaults); unknown keys are an error."""
        data = read_toml(path)
        settings = cls(
            ingest=section(IngestSettings, data.pop("ingest", {}), path, "ingest"),
            lar=section(LarSettings, data.pop("lar", {}), path, "lar"),
            dims=_dims(data.pop("dims", {}), path),
            actions=_actions(data.pop("actions", {}), path),
            consolidate=section(ConsolidateSettings, data.pop("consolidate", {}), path, "consolidate"),
            engine=section(EngineSettings, data.pop("engine", {}), path, "engine"),
        )
        unknown = sorted(set(data) - set(cls.ELSEWHERE))
        if unknown:
            raise DmnError(f"{path}: unknown section(s) {unknown}; "
                           f"known: ingest, lar, dims, actions, consolidate, engine, {', '.join(cls.ELSEWHERE)}")
        if settings.lar.hmac_secret is None:
            settings.lar.hmac_secret = os.environ.get("DMN_LAR_HMAC_SECRET") or None
        return settings


def _dims(values: Any, path: Path) -> dict[str, int]:
    if not isinstance(values, dict):
        raise DmnError(f"{path}: [dims] must be a table of world = dimension")
    for world, dim in values.items():
        if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
            raise DmnError(f"{path}: [dims] {world!r} must be a positive integer, got {dim!r}")
    return dict(values)


def _actions(values: Any, path: Path) -> dict[str, int]:
    if not isinstance(values, dict):
        raise DmnError(f"{path}: [actions] must be a table of world = \"discrete\" or a dimension")
    out = {}
    for world, kind in values.items():
        if kind == "discrete":
            out[world] = 0
        elif isinstance(kind, int) and not isinstance(kind, bool) and kind > 0:
            out[world] = kind
        else:
            raise DmnError(f"{path}: [actions] {world!r} must be \"discrete\" or a positive integer, got {kind!r}")
    return out
