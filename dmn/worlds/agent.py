"""The reference agent: System 2 plans with the world model, System 1 (when given) answers first.

Every step is logged through `dmn.EpisodeLogger` under world = the env id and encoder = the world
model's version: each candidate first action System 2 imagined (a `simulation`), the action taken
(a `decision`, with its source and latency), what the environment answered (an `outcome`) and the
episode's end. Latencies are the decision's own cost (a System 1 lookup, a System 2 search); the
encoder runs either way and is not counted. On audited steps System 2 also plans after System 1
answered: its simulations are logged, so System 2's answer there can be read from the logs too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
from dmn.config import Settings
from dmn.home import Home
from dmn.logger import EpisodeLogger
from dmn.worlds.plan import Plan, Planner, one_thread
from dmn.worlds.train import load_world, make_env


class ReflexSource(Protocol):
    """What the agent asks first: `lookup(z)` returns an answer with `.action` and `.confidence`, or None."""

    def lookup(self, z: np.ndarray) -> Any: ...


@dataclass
class RunReport:
    world: str
    encoder: str
    returns: list[float] = field(default_factory=list)
    decisions: int = 0
    system1: int = 0
    """Decisions a reflex served."""
    audited: int = 0
    """Reflex-served steps System 2 planned for too."""
    agreed: int = 0
    """Audited steps where System 2 chose the reflex's action."""
    system1_ms: float = 0.0
    """Total latency of System 1 decisions."""
    system2_ms: float = 0.0
    """Total latency of System 2 decisions (audits not included)."""
    simulations: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        system2 = self.decisions - self.system1
        return {
            "world": self.world, "encoder": self.encoder, "episodes": len(self.returns),
            "mean_return": float(np.mean(self.returns)) if self.returns else None,
            "min_return": min(self.returns, default=None), "max_return": max(self.returns, default=None),
            "decisions": self.decisions, "system1_share": self.system1 / self.decisions if self.decisions else None,
            "audited": self.audited, "agreement": self.agreed / self.audited if self.audited else None,
            "system1_latency_ms": self.system1_ms / self.system1 if self.system1 else None,
            "system2_latency_ms": self.system2_ms / system2 if system2 else None,
            "simulations": self.simulations, "seconds": round(self.seconds, 2),
        }


def run(home: Home, env_id: str, episodes: int, *, seed: int = 0, reflexes: ReflexSource | None = None,
        audit_rate: float = 0.0, settings: Settings | None = None,
        on_progress: Callable[[str], None] | None = None) -> RunReport:
    """Run `episodes` episodes of `env_id` and log them into the home's inbox.

    >>> report = run(Home.resolve(), "CartPole-v1", episodes=5)  # doctest: +SKIP
    >>> report.to_dict()["mean_return"]  # doctest: +SKIP
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    if not 0.0 <= audit_rate <= 1.0:
        raise ValueError(f"audit_rate must be between 0 and 1, got {audit_rate}")
    settings = settings or home.settings()
    world = load_world(home, env_id, settings.world, on_train=on_progress)
    planner = Planner(world.model, settings.planner, seed=seed)
    rng = np.random.default_rng(seed)
    report = RunReport(env_id, world.encoder)
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
                    action = _decide(z, step, planner, reflexes, audit_rate, rng, log, report)
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


def _decide(z: np.ndarray, step: int, planner: Planner, reflexes: ReflexSource | None, audit_rate: float,
            rng: np.random.Generator, log: EpisodeLogger, report: RunReport) -> int:
    """One decision: a reflex if there is one (audited at `audit_rate`), else System 2."""
    report.decisions += 1
    asked = 0.0  # time spent asking System 1 before System 2 had to think after all
    if reflexes is not None:
        start = time.perf_counter()
        reflex = reflexes.lookup(z)
        ms = (time.perf_counter() - start) * 1000
        if reflex is not None:
            action = int(reflex.action)
            log.decision(step, z, action, source="system1", confidence=float(reflex.confidence), latency_ms=ms)
            report.system1 += 1
            report.system1_ms += ms
            if rng.random() < audit_rate:
                report.audited += 1
                report.agreed += _log_plan(planner.plan(z), z, step, log, report) == action
            return action
        asked = ms
    plan = planner.plan(z)
    log.decision(step, z, plan.action, source="system2", latency_ms=asked + plan.ms)
    report.system2_ms += asked + plan.ms
    return _log_plan(plan, z, step, log, report)


def _log_plan(plan: Plan, z: np.ndarray, step: int, log: EpisodeLogger, report: RunReport) -> int:
    cost = plan.ms / len(plan.candidates)
    for c in plan.candidates:
        log.simulation(step, z, c.action, c.score, predicted=c.predicted, vetoed=c.vetoed, cost_ms=cost)
    report.simulations += len(plan.candidates)
    return plan.action
