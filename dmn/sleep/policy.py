"""The policy network System 1 falls back on between situations: its definition, and its export to the
plain arrays that `dmn.bundle.decide.policy_answers` runs in numpy at lookup time.

It is trained by `dmn.sleep.train`; torch is needed in the night only.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Policy(nn.Module):
    """Latent in, `outputs` out (a logit per action, or a Gaussian head's means and log standard deviations):
    two hidden ReLU layers on the input normalised by the training states' `mean` and `std` (per dimension),
    so that training reads raw latents and never holds a normalised copy of them."""

    def __init__(self, dim: int, outputs: int, hidden: int, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def export(model: Policy, calibration: tuple[float, float, float], low: np.ndarray, high: np.ndarray
           ) -> dict[str, np.ndarray]:
    """The network as arrays (`dmn.bundle.decide.POLICY_KEYS`): input mean and std, each layer's weight
    (transposed, for x @ w) and bias, the calibration of its confidence, (scale, distance, shift):
    sigmoid(scale * top + distance * novelty-radii away + shift), and in a continuous world the range of
    each action dimension its Gaussian head's means are in units of (`low`, `high`; empty otherwise)."""
    weights = {"mean": model.mean.numpy().copy(), "std": model.std.numpy().copy()}
    for i, layer in enumerate((m for m in model.net if isinstance(m, nn.Linear)), 1):
        weights[f"w{i}"] = layer.weight.detach().numpy().T.copy()
        weights[f"b{i}"] = layer.bias.detach().numpy().copy()
    weights["scale"], weights["distance"], weights["shift"] = (np.float64(v) for v in calibration)
    weights["low"], weights["high"] = np.asarray(low, np.float32), np.asarray(high, np.float32)
    return weights
