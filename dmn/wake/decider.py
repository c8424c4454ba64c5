"""One call per step: System 1 first, the agent's planner when it abstains, each logged as the night expects.

    >>> with Decider.open("CartPole-v1", encoder="jepa@3", audit_rate=0.03) as decider:  # doctest: +SKIP
    ...     decider.episode()
    ...     decision = decider.decide(step, z, planner)   # planner(z, proposal) -> Plan or an action
    ...     obs, reward, *_ = env.step(decision.action)
    ...     decider.log.outcome(step, reward=reward)

The protocol it keeps, which an agent would otherwise write by hand: a System 1 step logs its decision
(source, confidence, latency) and no simulations; a System 2 step logs the planner's candidates as
simulations and its decision; an audit's System 2 decision carries the answer System 1 withheld
(`reflex`), which is what the night measures live precision and demotes situations from. Nothing is kept
between calls, so threads, asyncio tasks (`adecide`, for a planner that is a coroutine function) and
vectorised agents (`decide_batch`) may share one Decider.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

import numpy as np

from dmn.home import Home
from dmn.wake.client import ANY_ENCODER, Asked, Proposal, Reflex, Reflexes
from dmn.wake.logger import EpisodeLogger


@dataclass(frozen=True)
class Candidate:
    """One action the planner imagined."""

    action: Any
    """A label, or a vector in a continuous world."""
    score: float
    """How good the planner judged its imagined future (higher is better)."""
    predicted: Any = None
    """The latent the world model predicted it leads to (optional)."""
    vetoed: bool = False
    """True when the planner ruled it out (its imagined future looked like failure)."""


@dataclass(frozen=True)
class Plan:
    """What a planner decided, and optionally the candidates it weighed to decide it."""

    action: Any
    candidates: Sequence[Candidate] = ()
    """Any objects with `action`, `score` and optionally `predicted` and `vetoed` will do."""


Planner = Callable[[np.ndarray, "Proposal | None"], Any]
"""`planner(z, proposal)` returns a `Plan` (or anything with `action` and `candidates`), or a bare action.
`proposal` is System 1's proposal for `z` (`Reflexes.propose`: a label, or a mean and spread to start a
search from), or None: no bundle, a novel state, or an audit (which checks System 1 from a cold start)."""


@dataclass(frozen=True)
class Decision:
    """What the agent does at a step, and who decided it."""

    action: Any
    """The action to take: System 1's in the type the agent logged (an int label, a str, or a float32
    vector), or the planner's as it returned it."""
    source: str
    """'system1' (a reflex) or 'system2' (the planner)."""
    latency_ms: float
    """What deciding cost: the lookup, and the planner's search when it ran."""
    confidence: float | None = None
    """System 1's confidence in its answer (system1 steps)."""
    reflex: Reflex | None = None
    """System 1's answer, when it served one."""
    withheld: Reflex | None = None
    """On an audit, the answer System 1 held back so that the planner decided: logged with the decision."""
    plan: Any = None
    """What the planner returned (system2 steps), for the agent's own bookkeeping."""


class Decider:
    """System 1 in front of an agent's planner, logging every step. Thread-safe, and stateless between calls."""

    def __init__(self, reflexes: Reflexes | None, log: EpisodeLogger):
        if reflexes is not None and (reflexes.world != log.world or reflexes.encoder not in (ANY_ENCODER, log.encoder)):
            raise ValueError(f"System 1 serves world {reflexes.world!r} (encoder {reflexes.encoder!r}) but the log "
                             f"is of world {log.world!r} (encoder {log.encoder!r}): its audits would judge "
                             f"another world")
        self.reflexes, self.log = reflexes, log

    @classmethod
    def open(cls, world: str, *, encoder: str, home: Home | str | Path | None = None, audit_rate: float = 0.03,
             agent: str | None = None, seed: int | None = None) -> Decider:
        """A Decider on `world`'s bundle and a logger into the inbox, both in `home` (None: $DMN_HOME, else
        ./dmn-home), for latents of `encoder`. `audit_rate`: the share of System 1's answers withheld so
        that the planner checks them, which is what the night measures live precision from. Close it (or
        use `with`) so the last records reach the disk.

        >>> decider = Decider.open("CartPole-v1", encoder="jepa@3")  # doctest: +SKIP
        """
        if encoder == ANY_ENCODER:
            raise ValueError("a Decider logs its steps under the encoder: name it (ANY_ENCODER is for Reflexes alone)")
        home = home if isinstance(home, Home) else Home.resolve(home)
        reflexes = Reflexes.open(world, encoder=encoder, home=home, audit_rate=audit_rate, seed=seed)
        return cls(reflexes, EpisodeLogger(home, world=world, encoder=encoder, agent=agent))

    def episode(self, episode_id: str | None = None, *, meta: dict[str, Any] | None = None) -> str:
        """Start an episode in the log (`EpisodeLogger.episode`); returns its id."""
        return self.log.episode(episode_id, meta=meta)

    def decide(self, step: int, z: Any, planner: Planner, *, episode_id: str | None = None) -> Decision:
        """The action for latent `z` at `step`: System 1's if it answers, else the planner's; logged either way.

        >>> decision = decider.decide(step, z, lambda z, proposal: Plan(best, candidates))  # doctest: +SKIP
        """
        began = time.perf_counter()  # before the lookup: its cost is the decision's
        step_ = self._begin(step, z, self._ask(z), episode_id, began)
        return step_ if isinstance(step_, Decision) else self._deliberated(step_, planner(step_.z, step_.proposal))

    async def adecide(self, step: int, z: Any, planner: Callable[[np.ndarray, Proposal | None], Awaitable[Any]], *,
                      episode_id: str | None = None) -> Decision:
        """`decide` for an asyncio agent whose planner is a coroutine function (a world model served over the
        network, say): other tasks run while it deliberates, and each step still logs its own audit.

        >>> decision = await decider.adecide(step, z, remote_planner, episode_id=episode)  # doctest: +SKIP
        """
        began = time.perf_counter()  # before the lookup: its cost is the decision's
        step_ = self._begin(step, z, self._ask(z), episode_id, began)
        if isinstance(step_, Decision):
            return step_
        return self._deliberated(step_, await planner(step_.z, step_.proposal))

    def decide_batch(self, steps: Sequence[int], states: Any, planner: Planner, *,
                     episode_ids: Sequence[str]) -> list[Decision]:
        """`decide` for N environments stepped together: System 1 answers the (n, d) `states` in one
        vectorised lookup, the planner runs for each row it leaves, and each row is logged in its episode."""
        states = np.asarray(states)
        if not len(steps) == len(states) == len(episode_ids):
            raise ValueError(f"steps, states and episode_ids must have one entry per environment, "
                             f"got {len(steps)}, {len(states)} and {len(episode_ids)}")
        began = time.perf_counter()
        asked = self.reflexes.ask_batch(states) if self.reflexes is not None else [Asked(None)] * len(states)
        share = (time.perf_counter() - began) * 1000 / max(len(states), 1)  # each row's part of the lookup
        decisions = []
        for step, z, row, episode_id in zip(steps, states, asked, episode_ids):
            step_ = self._begin(step, z, row, episode_id, time.perf_counter(), share)
            decisions.append(step_ if isinstance(step_, Decision) else
                             self._deliberated(step_, planner(step_.z, step_.proposal)))
        return decisions

    def close(self) -> None:
        """Close the logger: everything logged is on disk."""
        self.log.close()

    def __enter__(self) -> Decider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the protocol, once: System 1 answers (and the step is logged), or the planner is asked -------------

    def _ask(self, z: Any) -> Asked:
        return self.reflexes.ask(z) if self.reflexes is not None else Asked(None)

    def _begin(self, step: int, z: Any, asked: Asked, episode_id: str | None, began: float,
               spent_ms: float = 0.0) -> Decision | _Deliberation:
        """A System 1 step, logged (its decision with confidence and latency, no simulations); or what the
        planner is to be asked, with System 1's proposal to start from (none on an audit, which checks cold)."""
        if asked.reflex is not None:
            reflex, ms = asked.reflex, spent_ms + (time.perf_counter() - began) * 1000
            self.log.decision(step, z, reflex.action, source="system1", confidence=reflex.confidence, latency_ms=ms,
                              episode_id=episode_id)
            return Decision(reflex.action, "system1", ms, reflex.confidence, reflex=reflex)
        proposal = self.reflexes.propose(z) if self.reflexes is not None and asked.withheld is None else None
        return _Deliberation(step, np.asarray(z), asked.withheld, proposal, episode_id, began, spent_ms,
                             time.perf_counter())

    def _deliberated(self, d: _Deliberation, plan: Any) -> Decision:
        """A System 2 step: the planner's decision (with what an audit withheld) and its candidates as
        simulations. The candidates are read before anything is logged, so a malformed plan logs nothing."""
        done = time.perf_counter()
        action, candidates = getattr(plan, "action", plan), list(getattr(plan, "candidates", None) or ())
        if candidates:
            predicted = [c.predicted for c in candidates if getattr(c, "predicted", None) is not None]
            if predicted and len(predicted) < len(candidates):
                raise ValueError("a plan's candidates must all carry `predicted`, or none of them")
            imagined = dict(actions=np.array([c.action for c in candidates]), scores=[c.score for c in candidates],
                            predicted=np.stack([np.asarray(p) for p in predicted]) if predicted else None,
                            vetoed=[bool(getattr(c, "vetoed", False)) for c in candidates])
        ms = d.spent_ms + (done - d.began) * 1000
        self.log.decision(d.step, d.z, action, source="system2", latency_ms=ms, episode_id=d.episode_id,
                          reflex=None if d.withheld is None else d.withheld.action)
        if candidates:
            self.log.candidates(d.step, **imagined, cost_ms=(done - d.thinking) * 1000 / len(candidates),
                                episode_id=d.episode_id)
        return Decision(action, "system2", ms, withheld=d.withheld, plan=plan)


@dataclass(frozen=True)
class _Deliberation:
    """A step System 1 left to the planner, between asking it and logging what it decided."""

    step: int
    z: np.ndarray
    withheld: Reflex | None
    proposal: Proposal | None
    episode_id: str | None
    began: float
    spent_ms: float
    thinking: float
    """When the planner was called: its share of the latency is the simulations' cost."""
