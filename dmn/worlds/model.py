"""The reference world model: a small JEPA over a Gymnasium observation vector.

    encoder(obs) -> z                 the latent state (the target encoder is its slow EMA copy)
    predictor(z, a) -> z'             the latent after action a, predicted without seeing the next observation
    heads(z') -> reward, done, value  what the step into z' earned, whether it ended the episode, and the
                                      discounted return-to-go from z' (under the data the model saw)

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
    def __init__(self, obs_dim: int, n_actions: int, latent_dim: int, hidden: int):
        super().__init__()
        self.n_actions = n_actions
        self.encoder = mlp(obs_dim, latent_dim, hidden)
        self.target = copy.deepcopy(self.encoder).requires_grad_(False)
        self.predictor = mlp(latent_dim + n_actions, latent_dim, hidden)
        self.head = mlp(latent_dim, 3, hidden)  # one trunk, three outputs: a third of the work in imagination
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
        return z + self.predictor(torch.cat([z, F.one_hot(action, self.n_actions).to(z.dtype)], -1))

    def heads(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reward, done logit, value) for the step that arrived in latent `z`."""
        reward, done, value = self.head(z).unbind(-1)
        return reward * self.reward_scale, done, value * self.value_scale

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        for target, online in zip(self.target.parameters(), self.encoder.parameters()):
            target.mul_(momentum).add_(online.detach(), alpha=1 - momentum)
