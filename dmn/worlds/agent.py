"""The reference agent: System 2 plans with the world model, System 1 (when given) answers first.

Each step is one `dmn.Decider` call, as any agent's would be: System 1 first, the planner where it
abstains, logged under world = the env id and encoder = the world model's version (System 2's
candidate first actions as simulations: each discrete action, or a continuous search's elites; the
decision with its source and latency; on an audit the answer System 1 withheld). The agent adds what
the environment answered (an `outcome`) and the episode's end. Latencies are the decision's own cost (a
System 1 lookup, a System 2 search); the encoder runs either way and is not counted. In a continuous
world, where System 1 abstains without an audit, System 2's search starts from System 1's proposal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium.wrappers import TimeLimit

from dmn.bundle.decide import action_distance
from dmn.home import Home
from dmn.progress import Progress
from dmn.sleep.experience import acceptable
from dmn.wake.client import Proposal, Reflexes
from dmn.wake.decider import Decider, Decision
from dmn.wake.logger import EpisodeLogger
from dmn.worlds.plan import Plan, Planner, one_thread
from dmn.worlds.settings import ReferenceSettings
from dmn.worlds.train import load_world, make_env


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
                 settings: ReferenceSettings | None = None, on_progress: Progress | None = None) -> Reflexes:
    """The System 1 client for the reference agent of `env_id`: the world's bundle, for its world model's encoder."""
    settings = settings or ReferenceSettings.load(home)
    world = load_world(home, env_id, settings.world, on_train=on_progress)
    return Reflexes.open(env_id, encoder=world.encoder, home=home, audit_rate=audit_rate, seed=seed)


def run(home: Home, env_id: str, episodes: int, *, seed: int = 0, reflexes: Reflexes | None = None,
        settings: ReferenceSettings | None = None, on_progress: Progress | None = None,
        decisions: int = 0) -> RunReport:
    """Run `episodes` episodes of `env_id` (episode i from seed `seed + i`) and log them into the home's inbox;
    or, given `decisions` instead, whole episodes until at least that many decisions are made.

    >>> report = run(Home.resolve(), "CartPole-v1", episodes=5)  # doctest: +SKIP
    >>> report.to_dict()["mean_return"]  # doctest: +SKIP
    """
    if episodes < 1 and decisions < 1:
        raise ValueError(f"episodes or decisions must be at least 1, got {episodes} and {decisions}")
    settings = settings or ReferenceSettings.load(home)
    world = load_world(home, env_id, settings.world, on_train=on_progress)
    planner = Planner(world.model, settings.planner)
    report = RunReport(env_id, world.encoder, continuous=bool(world.model.action_dim))

    def plan(z: np.ndarray, proposal: Proposal | None) -> Plan:
        return planner.plan(z, None if proposal is None or proposal.spread is None else (proposal.action, proposal.spread))

    started = time.perf_counter()
    env = make_env(env_id)
    try:
        with one_thread(), Decider(reflexes, EpisodeLogger(home, world=env_id, encoder=world.encoder,
                                                           agent="dmn-world")) as decider:
            log = decider.log
            episode = 0
            while (report.decisions < decisions) if decisions else (episode < episodes):
                obs, _ = env.reset(seed=seed + episode)
                log.episode(meta={"env": env_id, "seed": seed + episode, "reflexes": reflexes is not None})
                total, step = 0.0, 0
                while True:
                    decision = decider.decide(step, world.encode(obs), plan)
                    _tally(report, decision, reflexes)
                    obs, reward, terminated, truncated, _ = env.step(decision.action)
                    total += float(reward)
                    log.outcome(step, reward=float(reward), done=terminated or truncated)
                    step += 1
                    if terminated or truncated:
                        break
                # Success: surviving to the time limit where ending is failure (CartPole), else ending (Acrobot).
                log.end(return_=total, success=truncated if bool(world.model.failure) else terminated)
                report.returns.append(total)
                episode += 1
                if on_progress:  # how far through the decisions, or the episodes, asked for
                    done, goal = (min(report.decisions, decisions), decisions) if decisions else (episode, episodes)
                    on_progress(f"episode {episode}: return {total:g}", done=done, total=goal)
    finally:
        env.close()
    report.seconds = time.perf_counter() - started
    return report


def _tally(report: RunReport, decision: Decision, reflexes: Reflexes | None) -> None:
    """Count one decision into the day's report; on an audit, judge the answer System 1 withheld."""
    report.decisions += 1
    if decision.source == "system1":
        report.system1 += 1
        report.system1_ms += decision.latency_ms
        return
    plan = decision.plan
    report.system2_ms += decision.latency_ms
    report.simulations += len(plan.candidates)
    (report.seeded if plan.seeded else report.sequences).append(plan.sequences)
    if decision.withheld is not None:
        report.audited += 1
        report.agreed += not report.continuous and str(plan.action) == str(decision.withheld.action)
        report.right += _acceptable(plan, decision.withheld.action, reflexes.manifest)


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


def random_returns(env_id: str, episodes: int, seed: int = 0, max_steps: int | None = None) -> list[float]:
    """The returns of a uniformly random policy on the episodes `run` plays with the same `seed` (cut at
    `max_steps`, when given, as the agent's were): the floor that normalised returns are measured from."""
    env = make_env(env_id) if max_steps is None else TimeLimit(make_env(env_id), max_steps)
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
