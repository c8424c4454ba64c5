"""System 1 at run time: ask the published bundle before deliberating.

>>> reflexes = Reflexes.open("CartPole-v1", encoder=world.encoder)  # doctest: +SKIP
>>> reflex = reflexes.lookup(z)                                   # doctest: +SKIP
>>> action = reflex.action if reflex else system2(z)              # doctest: +SKIP

With audits (`audit_rate`), `ask` also says which answer was withheld; `dmn.Decider` does all of a
step (ask, deliberate, log) in one call.

A lookup answers from the bundle's heuristic table or its policy network exactly as the night
evaluated them (`dmn.bundle.decide.Rule`), or returns None — and then the agent deliberates. It never
raises for a reason that is the bundle's (none yet, a damaged one, another encoder, a novel state, low
confidence, an audit); it raises ValueError for a state that is not a finite vector of the bundle's size.

A newly published bundle is picked up without a restart: a lookup looks at the CURRENT pointer at
most every `check_every` seconds, and a new bundle is loaded and verified on a background thread while
the old one keeps serving; the swap is one assignment, so every answer comes from one whole bundle.
A bundle that fails verification is not served; `problem` says why.

Only numpy and FAISS run here: `import dmn` and a lookup never import torch or DuckDB.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dmn.bundle import publish
from dmn.bundle.decide import action_distance, policy_gaussian, policy_head
from dmn.bundle.load import Bundle, load
from dmn.errors import DmnError
from dmn.home import Home

ANY_ENCODER = "*"
"""`Reflexes.open(..., encoder=ANY_ENCODER)`: serve a bundle whatever encoder its latents came from (an
explicit opt-out of the check that keeps a bundle from answering states of another latent space)."""


@dataclass(frozen=True)
class Reflex:
    """What deliberation decided the last times the agent was here."""

    action: Any
    """The action: a label as the agent logged it (an int when every label of the world is an integer,
    else a str), or in a continuous world a float32 vector."""
    confidence: float
    """How likely the action is as good as System 2's choice here: the table's Wilson lower bound on its
    situation's agreement, or the policy's calibrated chance."""
    source: str
    """'table' or 'policy'."""
    cluster: int
    """The nearest situation."""
    support: float
    """Age-weighted System 2 decisions behind that situation."""
    avoid: tuple[Any, ...]
    """Actions System 2 kept vetoing in that situation (labels, as `action`)."""
    version: str
    """The bundle that answered."""


@dataclass(frozen=True)
class Asked:
    """What asking System 1 came to: the answer to act on, or the one it held back for an audit."""

    reflex: Reflex | None
    """System 1's answer: act on it. None: deliberate."""
    withheld: Reflex | None = None
    """On an audit, the answer System 1 would have given (`reflex` is None): log it with System 2's
    decision (`EpisodeLogger.decision(..., reflex=withheld.action)`), and the next night measures System 1's
    live precision from it and demotes situations where it was wrong."""


@dataclass(frozen=True)
class Imagined:
    """What System 2 came to expect when it imagined an action in this situation: one simulation, recalled."""

    score: float
    """Mean imagined score."""
    danger: float
    """Share of those imaginings System 2 vetoed (the action looked like it ends in failure)."""
    outcome: int
    """The most likely outcome type (a row of the bundle's outcomes table), -1 when none was recorded."""
    outcome_share: float
    """How often that outcome type was imagined for this action here."""
    cluster: int
    version: str


@dataclass(frozen=True)
class Proposal:
    """The policy's answer for a state, sure or not: where a planner may start its search."""

    action: Any
    """A label (as `Reflex.action`), or in a continuous world the mean of the policy's Gaussian (a float32 vector)."""
    spread: np.ndarray | None
    """In a continuous world, the Gaussian's standard deviation per dimension; None otherwise."""
    confidence: float
    """Its calibrated chance of being as good as System 2's choice (below the threshold, System 1 abstained)."""
    cluster: int
    version: str


@dataclass
class _Serving:
    """A loaded bundle, with what answers and recollections read prepared once."""

    bundle: Bundle
    dim: int
    usable: bool
    """False when the bundle was made for another encoder: it is kept, but never answers."""
    table: list[Reflex]
    """Per situation: the table's answer, the same object every time (the rule says when it may give it)."""
    radius2: np.ndarray
    """Per situation: squared novelty radius."""
    score: np.ndarray
    """(situations, actions) mean imagined score (NaN where an action was never imagined)."""
    danger: np.ndarray
    """(situations, actions) veto rate."""
    kinds: np.ndarray
    """(situations, actions, outcome types) how often each outcome type was imagined."""
    action_index: dict[str, int]
    labels: list[Any]
    """The bundle's action labels as the agent logged them (`_labels`)."""
    recalled: tuple | None
    """A continuous world's candidates per situation (`_candidates`); None in a discrete world."""

    def reflex(self, action: Any, confidence: float, source: str, situation: int) -> Reflex:
        """The decision rule's answer as a `Reflex`."""
        if source == "table":
            return self.table[situation]
        here = self.table[situation]
        action = np.asarray(action, np.float32) if self.bundle.action_dim else self.labels[action]
        return Reflex(action, confidence, source, situation, here.support, here.avoid, here.version)


class Reflexes:
    """The System 1 client of one world. Thread-safe: share one between threads."""

    def __init__(self, home: Home, world: str, encoder: str, audit_rate: float, check_every: float,
                 seed: int | None):
        if not isinstance(encoder, str) or not encoder:
            raise ValueError(f"encoder must be the version of the encoder the agent's latents come from "
                             f"(or dmn.ANY_ENCODER to serve any bundle), got {encoder!r}")
        if not 0.0 <= audit_rate <= 1.0:
            raise ValueError(f"audit_rate must be between 0 and 1, got {audit_rate}")
        if check_every < 0:
            raise ValueError(f"check_every must be zero or more seconds, got {check_every}")
        self.home, self.world, self.encoder = home, world, encoder
        self.audit_rate, self.check_every = audit_rate, check_every
        self.problem: str | None = None
        """Why the client is silent or serves an older bundle than the published one (None when all is well)."""
        self._serving: _Serving | None = None
        self._rng = np.random.default_rng(seed)
        self._loading = threading.Lock()
        self._next_check = 0.0
        self._refused: str | None = None  # a published version that failed to load: not tried again
        self.refresh()

    @classmethod
    def open(cls, world: str, *, encoder: str, home: Home | str | Path | None = None, audit_rate: float = 0.0,
             check_every: float = 2.0, seed: int | None = None) -> Reflexes:
        """The client of `world`'s published bundle in `home` (None: $DMN_HOME, else ./dmn-home).

        `encoder`: the version of the encoder the agent's latents come from (required: a bundle made for
        another latent space stays silent; `ANY_ENCODER` opts out). `audit_rate`: share of answers
        withheld so that System 2 decides and keeps being checked (`ask` says which). Opening never fails
        for want of a bundle: the client abstains until one is published.

        >>> reflexes = Reflexes.open("CartPole-v1", encoder="jepa-0b45d9cf19b4", audit_rate=0.03)  # doctest: +SKIP
        """
        return cls(home if isinstance(home, Home) else Home.resolve(home), world, encoder, audit_rate, check_every,
                   seed)

    @property
    def version(self) -> str | None:
        """The bundle version being served, or None."""
        serving = self._serving
        return serving.bundle.version if serving else None

    @property
    def manifest(self) -> dict[str, Any] | None:
        """The manifest of the bundle being served (its figures, thresholds, settings), or None."""
        serving = self._serving
        return serving.bundle.manifest if serving else None

    def refresh(self) -> bool:
        """Load the published bundle now if it is not the one serving (trying again one that failed to
        load: background checks do not); True when a new one was swapped in."""
        self._next_check = time.monotonic() + self.check_every
        with self._loading:
            self._refused = None
            return self._reload()

    def lookup(self, z: Any) -> Reflex | None:
        """System 1's answer for one latent state (a 1-D vector), or None: deliberate. (With audits, `ask`
        also returns the answer an audit withheld: log it, or the audit is wasted.)"""
        return self.ask(z).reflex

    def ask(self, z: Any) -> Asked:
        """System 1's answer for one latent state, with the answer withheld if this lookup is an audit.
        Nothing is kept between calls: threads and tasks may share the client.

        >>> action = asked.reflex.action if (asked := reflexes.ask(z)).reflex else plan(z)  # doctest: +SKIP
        """
        serving = self._current()
        x = _states(z, serving.dim if serving else None, 1)
        if serving is None or not serving.usable:
            return _SILENT
        answer = serving.bundle.rule.decide_one(x)
        if answer is None:
            return _SILENT
        reflex = serving.reflex(*answer)
        if self.audit_rate and self._rng.random() < self.audit_rate:
            return Asked(None, reflex)
        return Asked(reflex)

    def lookup_batch(self, states: Any) -> list[Reflex | None]:
        """System 1's answers for an (n, d) batch of latent states, in one vectorised call (None: deliberate)."""
        return [asked.reflex for asked in self.ask_batch(states)]

    def ask_batch(self, states: Any) -> list[Asked]:
        """`ask` for an (n, d) batch of latent states in one vectorised call: one `Asked` per row, each
        saying what its audit withheld, if it was one."""
        serving = self._current()
        x = _states(states, serving.dim if serving else None, 2)
        if serving is None or not serving.usable:
            return [_SILENT] * len(x)
        answers = serving.bundle.answer(x)
        actions = list(answers.action) if serving.bundle.action_dim else answers.action.tolist()
        reflexes = [serving.reflex(*a) if a[2] else None for a in zip(
            actions, answers.confidence.tolist(), answers.source.tolist(), answers.situation.tolist())]
        audited = (self._rng.random(len(x)) < self.audit_rate).tolist() if self.audit_rate else [False] * len(x)
        return [_SILENT if r is None else Asked(None, r) if a else Asked(r) for r, a in zip(reflexes, audited)]

    def propose(self, z: Any) -> Proposal | None:
        """The policy's proposal for a state, whether or not System 1 would answer with it: a start for the
        planner where System 1 abstains (in a continuous world, the mean and spread of a Gaussian around
        System 2's action). None when no usable bundle serves, or the state is novel (beyond the policy's reach)."""
        serving = self._current()
        x = _states(z, serving.dim if serving else None, 1)
        return _proposal(serving, x) if serving is not None and serving.usable else None

    def imagine(self, z: Any, action: Any) -> Imagined | None:
        """What System 2 expected of `action` in this state, recalled from the situation's simulations
        instead of running the world model (in a continuous world, from its candidates nearest `action`); None
        when the state is novel or the action was never imagined here."""
        serving = self._current()
        x = _states(z, serving.dim if serving else None, 1)
        return _imagined(serving, x, action) if serving is not None and serving.usable else None

    # -- hot reload ---------------------------------------------------------------------------------------

    def _current(self) -> _Serving | None:
        """The bundle to answer from; at most every `check_every` seconds, start a background look for a newer one."""
        if time.monotonic() >= self._next_check and self._loading.acquire(blocking=False):
            self._next_check = time.monotonic() + self.check_every
            threading.Thread(target=self._reload_and_release, daemon=True).start()
        return self._serving

    def _reload_and_release(self) -> None:
        try:
            self._reload()
        finally:
            self._loading.release()

    def _reload(self) -> bool:
        """Swap in the published bundle if it is new; called with `_loading` held."""
        published = publish.current(self.home, self.world)
        serving = self._serving
        if published is None:
            self.problem = f"no bundle published for world {self.world!r} yet"
            return False
        if (serving is not None and serving.bundle.version == published) or published == self._refused:
            return False
        try:
            bundle = load(self.home, self.world, published)
        except DmnError as exc:
            self._refused = published
            self.problem = f"{exc}; " + (f"still serving {serving.bundle.version}" if serving else "abstaining")
            return False
        self._serving = _serve(bundle, self.encoder)
        self.problem = (None if self._serving.usable else
                        f"bundle {bundle.version} was made for encoder {bundle.manifest['encoder']!r}, "
                        f"not {self.encoder!r}: abstaining")
        return True


_SILENT = Asked(None)


def _serve(bundle: Bundle, encoder: str) -> _Serving:
    m, table = bundle.manifest, bundle.table
    labels = _labels(bundle.actions)
    label = dict(zip(bundle.actions, labels))
    best = bundle.rule.best if bundle.action_dim else [label[a] for a in table["best_action"].to_pylist()]
    answers = zip(best, table["confidence"].to_pylist(), table["support"].to_pylist(), table["avoid"].to_pylist())
    return _Serving(
        bundle=bundle, dim=m["dim"], usable=encoder in (ANY_ENCODER, m["encoder"]),
        table=[Reflex(action, confidence, "table", c, support, tuple(label.get(a, a) for a in avoid), bundle.version)
               for c, (action, confidence, support, avoid) in enumerate(answers)],
        radius2=table["radius"].to_numpy() ** 2, score=_grid(table["score_mean"]), danger=_grid(table["veto_rate"]),
        kinds=np.array(table["outcome_types"].to_pylist(), np.float64),
        action_index={a: i for i, a in enumerate(bundle.actions)}, labels=labels, recalled=_candidates(bundle),
    )


def _labels(actions: list[str]) -> list[Any]:
    """A world's action labels in the type the agent logged them: the lake keeps labels as text, so a world
    whose labels are all integers written plainly ("0", "-3", not "07") gets ints back, any other its strings."""
    try:
        numbers = [int(a) for a in actions]
    except ValueError:
        return list(actions)
    return numbers if [str(n) for n in numbers] == list(actions) else list(actions)


def _proposal(serving: _Serving, x: np.ndarray) -> Proposal | None:
    """`Reflexes.propose` for the state `x`: None beyond the policy's reach."""
    bundle = serving.bundle
    answer = bundle.rule.propose_one(x)
    if answer is None:
        return None
    action, confidence, c = answer
    if not bundle.action_dim:
        return Proposal(serving.labels[action], None, confidence, c, bundle.version)
    spread = policy_gaussian(bundle.policy, policy_head(bundle.policy, x[None]))[1][0]  # the head's other half
    return Proposal(action, spread.astype(np.float32), confidence, c, bundle.version)


def _imagined(serving: _Serving, x: np.ndarray, action: Any) -> Imagined | None:
    """`Reflexes.imagine` for the state `x`: None when it is novel or `action` was never imagined there."""
    distance, ids = serving.bundle.index.search(x[None], 1)
    c = int(ids[0, 0])
    if float(distance[0, 0]) > serving.radius2[c]:
        return None
    if serving.bundle.action_dim:
        return _recall(serving, c, _states(action, serving.bundle.action_dim, 1, "an action"))
    j = serving.action_index.get(str(action))
    if j is None or np.isnan(serving.score[c, j]):
        return None
    kinds = serving.kinds[c, j]
    kind = int(kinds.argmax()) if kinds.size and kinds.max() > 0 else -1
    return Imagined(float(serving.score[c, j]), float(serving.danger[c, j]), kind,
                    float(kinds[kind]) if kind >= 0 else 0.0, c, serving.bundle.version)


def _recall(serving: _Serving, c: int, action: np.ndarray, nearest: int = 8) -> Imagined | None:
    """What System 2 imagined for the candidates of situation `c` nearest `action` (in units of the range)."""
    bounds, tried, score, vetoed, outcome, low, high = serving.recalled
    mine = slice(bounds[c], bounds[c + 1])
    if bounds[c] == bounds[c + 1]:
        return None
    near = np.argsort(action_distance(tried[mine], action[None], low, high))[:nearest]
    kinds = np.bincount(outcome[mine][near] + 1)[1:]  # -1: nothing imagined
    kind = int(kinds.argmax()) if kinds.size and kinds.max() > 0 else -1
    return Imagined(float(score[mine][near].mean()), float(vetoed[mine][near].mean()), kind,
                    float(kinds[kind]) / len(near) if kind >= 0 else 0.0, c, serving.bundle.version)


def _candidates(bundle: Bundle) -> tuple | None:
    """A continuous bundle's recorded candidates, grouped by situation, as arrays for `_recall`: (bounds,
    actions, scores, vetoes, outcome types, and the range of the actions: low, high)."""
    table = bundle.candidates
    if table is None:
        return None
    cluster = table["cluster"].to_numpy()
    order = np.argsort(cluster, kind="stable")
    return (np.searchsorted(cluster[order], np.arange(bundle.index.ntotal + 1)),
            table["action"].combine_chunks().flatten().to_numpy().reshape(-1, bundle.action_dim)[order],
            table["score"].to_numpy()[order], table["vetoed"].to_numpy(zero_copy_only=False)[order].astype(float),
            table["outcome"].to_numpy()[order],
            np.asarray(bundle.manifest["action_low"]), np.asarray(bundle.manifest["action_high"]))


def _grid(column: Any) -> np.ndarray:
    """A list<double> column with NULLs as a float matrix with NaN."""
    return np.array([[np.nan if v is None else v for v in row] for row in column.to_pylist()], np.float64)


def _states(value: Any, dim: int | None, ndim: int, what: str | None = None) -> np.ndarray:
    """A state (`ndim` 1: a vector) or a batch of them (`ndim` 2: an (n, d) matrix), as contiguous float32,
    checked against the bundle's dimension `dim`; ValueError says what is wrong with it (`what` it is)."""
    shape = "a 1-D vector" if ndim == 1 else "an (n, d) matrix"
    what = what or ("a state" if ndim == 1 else "states")
    try:
        x = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numbers, got {type(value).__name__}") from None
    if x.ndim != ndim:
        raise ValueError(f"{what} must be {shape}, got an array of shape {x.shape}")
    if dim is not None and x.shape[-1] != dim:
        raise ValueError(f"{what} must have {dim} dimensions (the bundle's), got {x.shape[-1]}")
    flat = x.reshape(-1)
    if not math.isfinite(float(flat @ flat)) and not np.isfinite(flat).all():  # the dot product is the cheaper test
        raise ValueError(f"{what} must be finite: {'it contains' if ndim == 1 else 'they contain'} NaN or Inf")
    return np.ascontiguousarray(x)
