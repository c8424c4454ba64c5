"""The reference world model: a small JEPA over a Gymnasium observation vector.

    encoder(obs) -> z                 the latent state (the target encoder is its slow EMA copy)
    predictor(z, a) -> z'             the latent after action a (one-hot, or a vector scaled to [-1, 1] by the
                                      action space's bounds), predicted without seeing the next observation
    heads(z', a) -> reward, done, value
                                      what the step into z' earned, whether it ended the episode, and the
                                      discounted return-to-go from z' (under the data the model saw); a
                                      continuous model's heads also see the action that led there, because
                                      an arm's reward charges for effort, which the state it reaches cannot show

Observation normalisation lives in buffers, so a state dict is all it takes to rebuild the model.
The training loop is in `dmn.worlds.train`; the planner that imagines with it is in `dmn.worlds.plan`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def mlp(inputs: int, outputs: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, outputs))


class WorldModel(nn.Module):
    def __init__(self, obs_dim: int, n_actions: int, latent_dim: int, hidden: int, action_dim: int = 0):
        """`n_actions` discrete actions; or, with `action_dim` > 0, continuous actions of that length (and
        `n_actions` 0), whose bounds are the buffers `action_low` and `action_high`."""
        super().__init__()
        self.n_actions, self.action_dim = n_actions, action_dim
        self.encoder = mlp(obs_dim, latent_dim, hidden)
        self.target = copy.deepcopy(self.encoder).requires_grad_(False)
        self.predictor = mlp(latent_dim + (action_dim or n_actions), latent_dim, hidden)
        if action_dim:  # only here, so that a discrete model's state dict is what it always was
            self.register_buffer("action_low", -torch.ones(action_dim))
            self.register_buffer("action_high", torch.ones(action_dim))
        self.head = mlp(latent_dim + action_dim, 3, hidden)  # one trunk, three outputs: a third of the work
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("reward_scale", torch.ones(()))  # the heads predict in units of these scales
        self.register_buffer("value_scale", torch.ones(()))
        self.register_buffer("failure", torch.zeros((), dtype=torch.bool))  # does ending the episode forfeit reward?

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encoder((obs - self.obs_mean) / self.obs_std)

    @torch.no_grad()
    def encode_target(self, obs: torch.Tensor) -> torch.Tensor:
        return self.target((obs - self.obs_mean) / self.obs_std)

    def step(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The next latent: a residual update, so "nothing changes" is the easy default."""
        return z + self.predictor(torch.cat([z, self._inputs(action).to(z.dtype)], -1))

    def heads(self, z: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reward, done logit, value) for the step that took `action` into latent `z`."""
        inputs = torch.cat([z, self._inputs(action).to(z.dtype)], -1) if self.action_dim else z
        reward, done, value = self.head(inputs).unbind(-1)
        return reward * self.reward_scale, done, value * self.value_scale

    def _inputs(self, action: torch.Tensor) -> torch.Tensor:
        """What the networks see of an action: one-hot, or a vector scaled to [-1, 1] by its bounds."""
        if self.action_dim:
            span = self.action_high - self.action_low
            return 2 * (action - self.action_low) / torch.where(span > 0, span, 1) - 1  # a fixed dimension: -1
        return F.one_hot(action, self.n_actions)

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        for target, online in zip(self.target.parameters(), self.encoder.parameters()):
            target.mul_(momentum).add_(online.detach(), alpha=1 - momentum)
