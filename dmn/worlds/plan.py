"""System 2: imagine action sequences in latent space with the world model and pick the best start.

A cross-entropy-method search. Every iteration samples `samples` action sequences, split evenly over
the first actions so that each candidate first action is imagined as often as the others; rolls them
out with the predictor; scores each by its imagined rewards plus `value_weight` times the values of
the states it passes through, both weighted by the imagined chance that the episode is still running;
then refits each first action's distribution of later steps to that action's elites.

A candidate first action's score is the mean of its elites in the last iteration. It is
vetoed when the episode ending early means failure (CartPole: yes; Acrobot: ending is the goal) and
its best imagined future fails with probability `veto` or more. System 2 takes the best-scoring
candidate it did not veto (the best of all when it vetoed every one): that rule is what lets
consolidation read System 2's answer from the simulation records alone.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from dmn.config import PlannerSettings
from dmn.worlds.model import WorldModel


@dataclass
class Candidate:
    action: int
    score: float
    """Mean imagined score of the best sequences that start with this action."""
    predicted: np.ndarray
    """The latent the best of them ends in: the imagined consequence."""
    ending: float
    """Imagined probability that the best of them ends the episode within the horizon."""
    vetoed: bool


@dataclass
class Plan:
    action: int
    candidates: list[Candidate]
    ms: float
    """Wall time of the whole search."""


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Plan on one thread: a search is many tiny matrix products, which more threads only slow down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Planner:
    def __init__(self, model: WorldModel, settings: PlannerSettings, seed: int = 0):
        self.model, self.settings = model, settings
        self.generator = torch.Generator().manual_seed(seed)

    @torch.inference_mode()
    def plan(self, z: np.ndarray) -> Plan:
        """Search from latent `z` (1-D) and return the chosen first action with every candidate's figures."""
        start = time.perf_counter()
        s, n = self.settings, self.model.n_actions
        per_action = -(-s.samples // n)  # sequences per first action in one iteration
        elites = max(1, min(s.elites // n, per_action))  # per first action
        first = torch.arange(n).repeat_interleave(per_action)  # sample i starts with action i // per_action
        # One sampling distribution of the later steps per first action, so that every candidate is
        # judged by the best continuations of its own, not by those found for another first action.
        probs = torch.full((n, max(s.horizon - 1, 0), n), 1.0 / n)
        z0 = torch.as_tensor(z, dtype=torch.float32).expand(len(first), -1)
        for _ in range(s.iterations):
            rest = (torch.multinomial(probs[first].reshape(-1, n), 1, generator=self.generator).view(len(first), -1)
                    if s.horizon > 1 else first.new_empty((len(first), 0)))
            actions = torch.cat([first[:, None], rest], 1)
            score, ending, final = self._imagine(z0, actions)
            top = score.view(n, per_action).topk(elites, dim=1)  # (n, elites)
            best = top.indices + torch.arange(n)[:, None] * per_action
            probs = 0.1 * probs + 0.9 * F.one_hot(actions[best][:, :, 1:], n).float().mean(1)
        candidates = []
        for action in range(n):
            i = int(best[action, 0])
            ends = float(ending[i])
            candidates.append(Candidate(action, float(top.values[action].mean()), final[i].numpy().copy(), ends,
                                        bool(self.model.failure) and ends >= s.veto))
        allowed = [c for c in candidates if not c.vetoed] or candidates
        action = max(allowed, key=lambda c: c.score).action
        return Plan(action, candidates, (time.perf_counter() - start) * 1000)

    def _imagine(self, z: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Roll every sequence out; return its score, its probability of ending early, and its last latent."""
        alive = torch.ones(len(z))
        score = torch.zeros(len(z))
        for h in range(actions.shape[1]):
            z = self.model.step(z, actions[:, h])
            reward, done, value = self.model.heads(z)
            score += alive * reward
            alive = alive * (1 - torch.sigmoid(done))
            score += self.settings.value_weight * alive * value
        return score, 1 - alive, z
