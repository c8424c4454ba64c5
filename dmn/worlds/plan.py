"""System 2: imagine action sequences in latent space with the world model and pick the best start.

Discrete actions: a cross-entropy-method search. Every iteration samples `samples` action sequences, split evenly over
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

Continuous actions: the cross-entropy method of PETS, TD-MPC2 and V-JEPA 2-AC. One Gaussian per step of
the horizon, starting at the middle of the action range with half its width as standard deviation;
every iteration samples `continuous_samples` sequences (clipped to the bounds), imagines them, and refits
the Gaussians to the `continuous_elites` best, until the first action's deviation is at most
`converged` of its range or `continuous_iterations` have run. The action is the elites' mean first
action; the candidates are the last iteration's elites. Given a proposal (System 1's, where it
abstained: a mean and a spread), a `seeded_share` of the first iteration's samples start from it,
TD-MPC2's trick: a good proposal makes the elites agree sooner, so fewer sequences are imagined, and
a wrong one loses to the cold samples.
"""

from __future__ import annotations

import contextlib
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
    action: int | np.ndarray
    """A discrete action, or a continuous one's vector."""
    score: float
    """Mean imagined score of the best sequences that start with this action."""
    predicted: np.ndarray
    """The latent the best of them ends in: the imagined consequence."""
    ending: float
    """Imagined probability that the best of them ends the episode within the horizon."""
    vetoed: bool


@dataclass
class Plan:
    action: int | np.ndarray
    candidates: list[Candidate]
    sequences: int
    """Action sequences imagined."""
    seeded: bool = False
    """Whether the search started from a proposal."""


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
    def plan(self, z: np.ndarray, start: tuple[np.ndarray, np.ndarray] | None = None) -> Plan:
        """Search from latent `z` (1-D) and return the chosen first action with every candidate's figures.
        `start`: a continuous world's proposal (mean, standard deviation) to seed the search with."""
        if self.repeatable:
            self.generator.manual_seed(self.settings.seed)
        z0 = torch.as_tensor(z, dtype=torch.float32)
        return self._continuous(z0, start) if self.model.action_dim else self._discrete(z0)

    def _discrete(self, z: torch.Tensor) -> Plan:
        s, n = self.settings, self.model.n_actions
        per_action = -(-s.samples // n)  # sequences per first action in one iteration
        first = torch.arange(n).repeat(per_action)  # sample i starts with action i % n
        probs = torch.full((max(s.horizon - 1, 0), n), 1.0 / n)
        z0 = z.expand(len(first), -1)
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
        return Plan(max(allowed, key=lambda c: c.score).action, candidates, len(first) * s.iterations)

    def _continuous(self, z: torch.Tensor, start: tuple[np.ndarray, np.ndarray] | None) -> Plan:
        s, low, high = self.settings, self.model.action_low, self.model.action_high
        span = high - low
        mean = ((low + high) / 2).expand(s.horizon, -1).clone()
        std = (span / 2).expand(s.horizon, -1).clone()
        z0, sequences = z.expand(s.continuous_samples, -1), 0
        for iteration in range(s.continuous_iterations):
            noise = torch.randn((s.continuous_samples, *mean.shape), generator=self.generator)
            actions = mean + std * noise
            if start is not None and iteration == 0:  # a share of the first samples start from the proposal
                seeded = int(round(s.seeded_share * s.continuous_samples))
                actions[:seeded, 0] = (torch.as_tensor(start[0], dtype=torch.float32)
                                       + torch.as_tensor(start[1], dtype=torch.float32) * noise[:seeded, 0])
            actions = torch.minimum(torch.maximum(actions, low), high)
            score, ending, final = self._imagine(z0, actions)
            sequences += s.continuous_samples
            elite = score.topk(s.continuous_elites).indices
            mean, std = actions[elite].mean(0), torch.maximum(actions[elite].std(0), 0.01 * span)
            if bool((std[0] <= s.converged * span).all()):
                break
        vetoed = bool(self.model.failure) & (ending[elite] >= s.veto)
        candidates = [Candidate(actions[i, 0].numpy().copy(), float(score[i]), final[i].numpy().copy(),
                                float(ending[i]), bool(v)) for i, v in zip(elite.tolist(), vetoed.tolist())]
        return Plan(mean[0].numpy().copy(), candidates, sequences, start is not None)

    def _imagine(self, z: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Roll every sequence out; return its score, its probability of ending early, and its last latent."""
        alive = torch.ones(len(z))
        score = torch.zeros(len(z))
        for h in range(actions.shape[1]):
            z = self.model.step(z, actions[:, h])
            reward, done, value = self.model.heads(z, actions[:, h])
            score += alive * reward
            alive = alive * (1 - torch.sigmoid(done))
            score += self.settings.value_weight * alive * value
        return score, 1 - alive, z
