"""System 2: imagine action sequences in latent space with the world model and pick the best start.

A cross-entropy-method search. Every iteration samples `samples` action sequences, split evenly over
the first actions so that each candidate first action is imagined as often as the others; rolls them
out with the predictor; scores each by its imagined rewards plus `value_weight` times the values of
the states it passes through, both weighted by the imagined chance that the episode is still running;
then refits the distribution of the later steps to the elites. (One distribution per first action,
each refit to its own elites, would judge every candidate by continuations of its own; with the same
budget it leaves each too few elites, and the Acrobot agent stopped reaching its goal.)

A candidate first action's score is the mean of its best sequences in the last iteration. It is
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
from threadpoolctl import threadpool_limits

from dmn.worlds.model import WorldModel
from dmn.worlds.settings import PlannerSettings


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
    """Act on one thread (torch's and numpy's BLAS): a search and a lookup are tiny matrix products, which
    more threads only slow down — on a busy machine, by milliseconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)


class Planner:
    def __init__(self, model: WorldModel, settings: PlannerSettings, repeatable: bool = True):
        """`repeatable`: every search draws the same random numbers (common random numbers, seeded by
        `settings.seed`), so System 2 is a function of the state, whatever run or day asks — what System 1
        can learn to recall. Data collection for training turns it off, so that its searches vary."""
        self.model, self.settings, self.repeatable = model, settings, repeatable
        self.generator = torch.Generator().manual_seed(settings.seed)

    @torch.inference_mode()
    def plan(self, z: np.ndarray) -> Plan:
        """Search from latent `z` (1-D) and return the chosen first action with every candidate's figures."""
        start = time.perf_counter()
        if self.repeatable:
            self.generator.manual_seed(self.settings.seed)
        s, n = self.settings, self.model.n_actions
        per_action = -(-s.samples // n)  # sequences per first action in one iteration
        first = torch.arange(n).repeat(per_action)  # sample i starts with action i % n
        probs = torch.full((max(s.horizon - 1, 0), n), 1.0 / n)
        z0 = torch.as_tensor(z, dtype=torch.float32).expand(len(first), -1)
        for _ in range(s.iterations):
            rest = (torch.multinomial(probs, len(first), replacement=True, generator=self.generator).T
                    if s.horizon > 1 else first.new_empty((len(first), 0)))
            actions = torch.cat([first[:, None], rest], 1)
            score, ending, final = self._imagine(z0, actions)
            elite = actions[score.topk(min(s.elites, len(score))).indices, 1:]
            probs = 0.1 * probs + 0.9 * F.one_hot(elite, n).float().mean(0)
        best_per_action = max(1, s.elites // n)
        top = score.view(per_action, n).topk(min(best_per_action, per_action), dim=0)
        candidates = []
        for action in range(n):
            best = int(top.indices[0, action]) * n + action
            ends = float(ending[best])
            candidates.append(Candidate(action, float(top.values[:, action].mean()), final[best].numpy().copy(),
                                        ends, bool(self.model.failure) and ends >= s.veto))
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
