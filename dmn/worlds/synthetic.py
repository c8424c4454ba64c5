"""Synthetic System 2 logs with a known ground truth, for tests, benchmarks and trying dmn without an agent.

States come from well-separated Gaussian "situations" in latent space; each situation has a true best
action (in a `ties` share of them, two equally good ones), and one other action imagined to end badly and
vetoed. System 2 imagines every action and acts on what it imagined, as a planner does: it takes its best-
scoring action it did not veto. Its imagination is right with probability `accuracy` (the good actions
score about 1, the others about 0, give or take `score_noise`); else it believes another action is the one.

    >>> truth = write_logs(Home.resolve(), situations=16, episodes=60)  # doctest: +SKIP
    >>> states, best = truth.sample(1000)  # fresh states and their true best actions

`write_vector_logs` does the same for a continuous world, whose actions are vectors. `big_log` writes one
large file of valid records, for measuring ingest's memory.
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
    """(situations,) each situation's true best action; in a continuous world (situations, a) action vectors."""
    vetoed: np.ndarray
    """(situations,) the action System 2 vetoes there."""
    second: np.ndarray
    """(situations,) the action as good as the best, in the tied situations; -1 elsewhere."""
    noise: float
    seed: int

    def situations(self, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """n fresh states from the situations, and the situation each came from."""
        rng = np.random.default_rng(self.seed + 10_000 + seed)
        which = rng.integers(len(self.centres), size=n)
        states = self.centres[which] + self.noise * rng.standard_normal((n, self.centres.shape[1]))
        return states.astype(np.float32), which

    def sample(self, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """n fresh states from the situations and their true best actions."""
        states, which = self.situations(n, seed)
        return states, self.best[which]

    def far(self, n: int, seed: int = 2) -> np.ndarray:
        """n states far from every situation."""
        rng = np.random.default_rng(self.seed + 20_000 + seed)
        return rng.standard_normal((n, self.centres.shape[1])).astype(np.float32)


def write_logs(home: Home, *, world: str = "synthetic", encoder: str = "synthetic@1", situations: int = 16,
               actions: int = 3, dim: int = 768, episodes: int = 60, steps: int = 20, accuracy: float = 0.97,
               noise: float = 0.05, ties: float = 0.0, score_noise: float = 0.1, seed: int = 0, day: int = 0) -> Truth:
    """Log `episodes` x `steps` System 2 decisions (each with one simulation per action) into the home's inbox.

    `seed` makes the world (its situations, their best actions, which are tied); `day` the episodes lived in it.
    """
    world_rng = np.random.default_rng(seed)
    centres = world_rng.standard_normal((situations, dim)).astype(np.float32)
    best = world_rng.integers(actions, size=situations)
    vetoed = (best + 1 + world_rng.integers(max(actions - 1, 1), size=situations)) % actions
    spare = [[a for a in range(actions) if a not in (best[s], vetoed[s])] for s in range(situations)]
    second = np.array([world_rng.choice(spare[s]) if spare[s] and world_rng.random() < ties else -1
                       for s in range(situations)])
    truth = Truth(centres, best, vetoed, second, noise, seed)
    rng = np.random.default_rng([seed, day])
    with EpisodeLogger(home, world=world, encoder=encoder, agent="synthetic", flush_records=5000) as log:
        for _ in range(episodes):
            log.episode()
            total = 0.0
            for step in range(steps):
                s = rng.integers(situations)
                state = (centres[s] + noise * rng.standard_normal(dim)).astype(np.float32)
                good = {int(best[s]), int(second[s])} - {-1}
                allowed = [a for a in range(actions) if actions == 1 or a != vetoed[s] or a in good]
                wrong = [a for a in allowed if a not in good]
                believed = good if rng.random() < accuracy or not wrong else {int(rng.choice(wrong))}
                scores = [float(a in believed) + score_noise * rng.standard_normal() for a in range(actions)]
                for a in range(actions):
                    log.simulation(step, state, a, scores[a], predicted=state + 0.5 * centres[(s + a) % situations],
                                   vetoed=a not in allowed, cost_ms=5.0)
                chosen = max(allowed, key=lambda a: scores[a])
                log.decision(step, state, int(chosen), source="system2", latency_ms=15.0)
                reward = float(chosen in good)
                total += reward
                log.outcome(step, reward=reward, done=step == steps - 1)
            log.end(return_=total)
    return truth


def write_vector_logs(home: Home, *, world: str = "arm", encoder: str = "arm@1", situations: int = 16,
                      action_dim: int = 7, dim: int = 768, episodes: int = 60, steps: int = 20, candidates: int = 16,
                      noise: float = 0.05, action_noise: float = 0.05, seed: int = 0, day: int = 0) -> Truth:
    """Log a continuous world's System 2 (`episodes` x `steps` decisions): each situation has a true best
    action vector in [-1, 1]^action_dim (`Truth.best`, (situations, action_dim)); System 2 imagines
    `candidates` actions around its belief, scores each by how near the true best it is, and takes the
    belief itself, off the true best by `action_noise` per dimension. Candidates are logged in one call,
    without a state (`EpisodeLogger.candidates`).
    """
    world_rng = np.random.default_rng(seed)
    centres = world_rng.standard_normal((situations, dim)).astype(np.float32)
    best = world_rng.uniform(-1, 1, (situations, action_dim)).astype(np.float32)
    truth = Truth(centres, best, np.full(situations, -1), np.full(situations, -1), noise, seed)
    rng = np.random.default_rng([seed, day, 1])
    with EpisodeLogger(home, world=world, encoder=encoder, agent="synthetic", flush_records=20_000) as log:
        for _ in range(episodes):
            log.episode()
            for step in range(steps):
                s = rng.integers(situations)
                state = (centres[s] + noise * rng.standard_normal(dim)).astype(np.float32)
                chosen = np.clip(best[s] + action_noise * rng.standard_normal(action_dim), -1, 1)
                tried = np.clip(chosen + 0.3 * rng.standard_normal((candidates, action_dim)), -1, 1)
                tried[0] = chosen
                log.candidates(step, tried, -((tried - best[s]) ** 2).sum(1), cost_ms=1.0)
                log.decision(step, state, chosen, source="system2", latency_ms=15.0)
                log.outcome(step, reward=float(-((chosen - best[s]) ** 2).sum()), done=step == steps - 1)
            log.end()
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
