"""Synthetic System 2 logs with a known ground truth, for tests, benchmarks and trying dmn without an agent.

States come from well-separated Gaussian "situations" in latent space; each situation has a true best
action, which System 2 picks with probability `accuracy` (else another at random), after imagining every
action: the true best scores about 1, the others about 0, and one other action per situation is
imagined to end badly and is vetoed.

    >>> truth = write_logs(Home.resolve(), situations=16, episodes=60)  # doctest: +SKIP
    >>> states, best = truth.sample(1000)  # fresh states and their true best actions

`big_log` writes one large file of valid records, for measuring ingest's memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dmn.home import Home
from dmn.wake.logger import EpisodeLogger


@dataclass
class Truth:
    centres: np.ndarray
    """(situations, dim) the situations' centres."""
    best: np.ndarray
    """(situations,) each situation's true best action."""
    vetoed: np.ndarray
    """(situations,) the action System 2 vetoes there."""
    noise: float
    seed: int

    def sample(self, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """n fresh states from the situations and their true best actions."""
        rng = np.random.default_rng(self.seed + 10_000 + seed)
        which = rng.integers(len(self.centres), size=n)
        states = self.centres[which] + self.noise * rng.standard_normal((n, self.centres.shape[1]))
        return states.astype(np.float32), self.best[which]

    def far(self, n: int, seed: int = 2) -> np.ndarray:
        """n states far from every situation."""
        rng = np.random.default_rng(self.seed + 20_000 + seed)
        return rng.standard_normal((n, self.centres.shape[1])).astype(np.float32)


def write_logs(home: Home, *, world: str = "synthetic", encoder: str = "synthetic@1", situations: int = 16,
               actions: int = 3, dim: int = 768, episodes: int = 60, steps: int = 20, accuracy: float = 0.97,
               noise: float = 0.05, seed: int = 0, day: int = 0) -> Truth:
    """Log `episodes` x `steps` System 2 decisions (each with one simulation per action) into the home's inbox.

    `seed` makes the world (its situations and their best actions); `day` the episodes lived in it.
    """
    world_rng = np.random.default_rng(seed)
    centres = world_rng.standard_normal((situations, dim)).astype(np.float32)
    best = world_rng.integers(actions, size=situations)
    vetoed = (best + 1 + world_rng.integers(max(actions - 1, 1), size=situations)) % actions
    truth = Truth(centres, best, vetoed, noise, seed)
    rng = np.random.default_rng([seed, day])
    with EpisodeLogger(home, world=world, encoder=encoder, agent="synthetic", flush_records=5000) as log:
        for _ in range(episodes):
            log.episode()
            total = 0.0
            for step in range(steps):
                s = rng.integers(situations)
                state = (centres[s] + noise * rng.standard_normal(dim)).astype(np.float32)
                for a in range(actions):
                    score = float(a == best[s]) + 0.1 * rng.standard_normal()
                    log.simulation(step, state, a, score, predicted=state + 0.5 * centres[(s + a) % situations],
                                   vetoed=bool(actions > 1 and a == vetoed[s] and a != best[s]), cost_ms=5.0)
                chosen = best[s] if rng.random() < accuracy else rng.choice([a for a in range(actions) if a != best[s]]
                                                                            or [best[s]])
                log.decision(step, state, int(chosen), source="system2", latency_ms=15.0)
                reward = float(chosen == best[s])
                total += reward
                log.outcome(step, reward=reward, done=step == steps - 1)
            log.end(return_=total)
    return truth


def big_log(path: Path, megabytes: float, dim: int = 256) -> int:
    """One JSONL file of about `megabytes` MiB: an episode, then per step a simulation and a decision, for
    measuring how ingest copes with large files. States repeat 64 prepared vectors, so that writing the
    file takes seconds. Returns the steps written (each is one simulation and one decision).

    >>> big_log(Path("dmn-home/inbox/big.jsonl"), 1024)  # doctest: +SKIP
    """
    vectors = [json.dumps([round(float(x), 6) for x in v]) for v in np.random.default_rng(0).standard_normal((64, dim))]
    target, size, step = megabytes * 2**20, 0, 0
    with open(path, "w") as f:
        f.write(json.dumps({"type": "episode", "episode_id": "big", "world": "big", "encoder": "big@1"}) + "\n")
        while size < target:
            state = vectors[step % 64]
            lines = (f'{{"type": "simulation", "episode_id": "big", "step": {step}, "state": {state}, '
                     f'"action": {step % 3}, "score": 1.0}}\n'
                     f'{{"type": "decision", "episode_id": "big", "step": {step}, "state": {state}, '
                     f'"action": {step % 3}, "source": "system2"}}\n')
            f.write(lines)
            size += len(lines)
            step += 1
    return step
