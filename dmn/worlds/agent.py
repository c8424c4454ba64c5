"""The reference agent: System 2 plans with the world model, System 1 (when given) answers first.

Every step is logged through `dmn.EpisodeLogger` under world = the env id and encoder = the world
model's version: System 2's candidate first actions (simulations, in one `candidates` call: each
discrete action, or a continuous search's elites), the action taken (a `decision`, with its source and
latency), what the environment answered (an `outcome`) and the episode's end. Latencies are the
decision's own cost (a System 1 lookup, a System 2 search); the encoder runs either way and is not
counted. When System 1 withholds an answer for an audit, System 2 decides, and its decision carries
the withheld answer (`reflex`), so agreement can be measured. In a continuous world, where System 1
abstains without an audit, System 2's search starts from System 1's proposal (`Reflexes.propose`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from dmn.bundle.decide import action_distance
from dmn.home import Home
from dmn.sleep.experience import acceptable
from dmn.wake.client import Reflexes
from dmn.wake.logger import EpisodeLogger
from dmn.worlds.plan import Plan, Planner, one_thread
from dmn.worlds.settings import ReferenceSettings
from dmn.worlds.train import load_world, make_env


class ReflexSource(Protocol):
    """What the agent asks first (a `dmn.Reflexes`): `lookup(z)` returns an answer with `.action` and
    `.confidence`, or None; `withheld()` the answer that None held back for an audit, if it did;
    `manifest` the serving bundle's manifest (its `stake` and `score_tolerance` say which answers are right);
    `propose(z)` the policy's proposal (`.action`, `.spread`), or None."""

    def lookup(self, z: np.ndarray) -> Any: ...

    def propose(self, z: np.ndarray) -> Any: ...

    def withheld(self) -> Any: ...

    @property
    def manifest(self) -> dict[str, Any] | None: ...


@dataclass
class RunReport:
    world: str
    encoder: str
    returns: list[float] = field(default_factory=list)
    decisions: int = 0
    system1: int = 0
    """Decisions a reflex served."""
    audited: int = 0
    """Steps where System 1 withheld its answer for an audit, so System 2 decided."""
    right: int = 0
    """Audited steps where System 1's withheld action was right as the serving bundle's night judges it: as
    good as System 2's choice by its scores (`dmn.sleep.experience.acceptable`), or with vector actions within
    the bundle's `action_tolerance` of System 2's."""
    agreed: int = 0
    """Audited steps where System 2 chose System 1's withheld action itself (discrete actions)."""
    system1_ms: float = 0.0
    """Total latency of System 1 decisions."""
    system2_ms: float = 0.0
    """Total latency of System 2 decisions (audits not included)."""
    simulations: int = 0
    """Simulation records logged (System 2's candidates)."""
    sequences: list[int] = field(default_factory=list)
    """Action sequences each System 2 decision imagined from a cold start."""
    seeded: list[int] = field(default_factory=list)
    """Action sequences each System 2 decision imagined starting from System 1's proposal."""
    continuous: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        system2 = self.decisions - self.system1
        return {
            "world": self.world, "encoder": self.encoder, "episodes": len(self.returns),
            "mean_return": float(np.mean(self.returns)) if self.returns else None,
            "min_return": min(self.returns, default=None), "max_return": max(self.returns, default=None),
            "decisions": self.decisions, "system1_share": self.system1 / self.decisions if self.decisions else None,
            "audited": self.audited, "precision": self.right / self.audited if self.audited else None,
            "agreement": self.agreed / self.audited if self.audited and not self.continuous else None,
            "latency_ms": (self.system1_ms + self.system2_ms) / self.decisions if self.decisions else None,
            "system1_latency_ms": self.system1_ms / self.system1 if self.system1 else None,
            "system2_latency_ms": self.system2_ms / system2 if system2 else None,
            "simulations": self.simulations,
            "sequences_per_plan": float(np.mean(self.sequences)) if self.sequences else None,
            "sequences_per_seeded_plan": float(np.mean(self.seeded)) if self.seeded else None,
            "seeded_plans": len(self.seeded), "seconds": round(self.seconds, 2),
        }


def reflexes_for(home: Home, env_id: str, *, audit_rate: float = 0.0, seed: int | None = None,
                 settings: ReferenceSettings | None = None, on_progress: Callable[[str], None] | None = None) -> Reflexes:
    """The System 1 client for the reference agent of `env_id`: the world's bundle, for its world model's encoder."""
    settings = settings or ReferenceSettings.load(home)
    world = load_world(home, env_id, settings.world, on_train=on_progress)
    return Reflexes.open(home, env_id, encoder=world.encoder, audit_rate=audit_rate, seed=seed)


def run(home: Home, env_id: str, episodes: int, *, seed: int = 0, reflexes: ReflexSource | None = None,
        settings: ReferenceSettings | None = None, on_progress: Callable[[str], None] | None = None) -> RunReport:
    """Run `episodes` episodes of `env_id` and log them into the home's inbox.

    >>> report = run(Home.resolve(), "CartPole-v1", episodes=5)  # doctest: +SKIP
    >>> report.to_dict()["mean_return"]  # doctest: +SKIP
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    settings = settings or ReferenceSettings.load(home)
    world = load_world(home, env_id, settings.world, on_train=on_progress)
    planner = Planner(world.model, settings.planner)
    report = RunReport(env_id, world.encoder, continuous=bool(world.model.action_dim))
    started = time.perf_counter()
    env = make_env(env_id)
    try:
        with one_thread(), EpisodeLogger(home, world=env_id, encoder=world.encoder, agent="dmn-world") as log:
            for episode in range(episodes):
                obs, _ = env.reset(seed=seed + episode)
                log.episode(meta={"env": env_id, "seed": seed + episode, "reflexes": reflexes is not None})
                total, step = 0.0, 0
                while True:
                    z = world.encode(obs)
                    action = _decide(z, step, planner, reflexes, log, report)
                    obs, reward, terminated, truncated, _ = env.step(action)
                    total += float(reward)
                    log.outcome(step, reward=float(reward), done=terminated or truncated)
                    step += 1
                    if terminated or truncated:
                        break
                # Success: surviving to the time limit where ending is failure (CartPole), else ending (Acrobot).
                log.end(return_=total, success=truncated if bool(world.model.failure) else terminated)
                report.returns.append(total)
                if on_progress:
                    on_progress(f"episode {episode + 1}/{episodes}: return {total:g}")
    finally:
        env.close()
    report.seconds = time.perf_counter() - started
    return report


def _decide(z: np.ndarray, step: int, planner: Planner, reflexes: ReflexSource | None, log: EpisodeLogger,
            report: RunReport) -> int | np.ndarray:
    """One decision: a reflex if System 1 answers, else System 2 (checking System 1's answer if it withheld
    one; else, with continuous actions, starting from System 1's proposal)."""
    report.decisions += 1
    asked, withheld, start = 0.0, None, None  # time spent asking System 1 before System 2 had to think after all
    if reflexes is not None:
        began = time.perf_counter()
        reflex = reflexes.lookup(z)
        if reflex is not None:
            asked = (time.perf_counter() - began) * 1000
            log.decision(step, z, reflex.action, source="system1", confidence=float(reflex.confidence),
                         latency_ms=asked)
            report.system1 += 1
            report.system1_ms += asked
            return reflex.action if report.continuous else int(reflex.action)
        withheld = reflexes.withheld()
        if withheld is None and report.continuous:  # an audit checks System 1 from a cold start
            proposal = reflexes.propose(z)
            start = None if proposal is None else (proposal.action, proposal.spread)
        asked = (time.perf_counter() - began) * 1000
    plan = planner.plan(z, start)
    log.decision(step, z, plan.action, source="system2", latency_ms=asked + plan.ms,
                 reflex=None if withheld is None else withheld.action)
    report.system2_ms += asked + plan.ms
    (report.seeded if plan.seeded else report.sequences).append(plan.sequences)
    if withheld is not None:
        report.audited += 1
        report.agreed += not report.continuous and str(plan.action) == str(withheld.action)
        report.right += _acceptable(plan, withheld.action, reflexes.manifest)
    c = plan.candidates
    log.candidates(step, np.array([x.action for x in c]), [x.score for x in c],
                   predicted=np.stack([x.predicted for x in c]), vetoed=[x.vetoed for x in c],
                   cost_ms=plan.ms / len(c))
    report.simulations += len(c)
    return plan.action


def _acceptable(plan: Plan, action: Any, manifest: dict[str, Any] | None) -> bool:
    """Whether System 1's `action` was as good as System 2's choice in `plan`, as the night judges it: within
    the bundle's tolerance of it (continuous actions), or acceptable by System 2's scores (discrete ones).
    Without a manifest, only System 2's very choice is right."""
    if isinstance(plan.action, np.ndarray):
        if manifest is None:
            return bool(np.array_equal(np.asarray(action, np.float32), plan.action))
        return bool(action_distance(np.asarray(action)[None], plan.action[None], np.array(manifest["action_low"]),
                                    np.array(manifest["action_high"]))[0] <= manifest["action_tolerance"])
    action = int(action)
    if manifest is None:
        return action == plan.action
    c = plan.candidates
    right, _, _ = acceptable(np.array([plan.action]), max(x.action for x in c) + 1, np.zeros(len(c), np.int64),
                             np.array([x.action for x in c]), np.array([x.score for x in c]),
                             np.array([x.vetoed for x in c]), manifest["score_tolerance"], stake=manifest["stake"])
    return bool(right[0, action])


def random_returns(env_id: str, episodes: int, seed: int = 0) -> list[float]:
    """The returns of a uniformly random policy on the episodes `run` plays with the same `seed`: the floor
    that normalised returns are measured from."""
    env = make_env(env_id)
    env.action_space.seed(seed)
    returns = []
    try:
        for episode in range(episodes):
            env.reset(seed=seed + episode)
            total, done = 0.0, False
            while not done:
                _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return returns
