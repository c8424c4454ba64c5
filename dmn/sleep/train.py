"""Distil System 2 into the policy network: its training targets, the training loop, and calibration.

For labels, the network has one logistic output per action: the chance that the action is as good as System
2's choice there (`dmn.sleep.experience.acceptable`). Targets mix that (hard) with where each action scored
between the step's worst candidate and System 2's best (soft): `dmn.sleep.experience.targets`. For vectors, it
has a Gaussian head: per dimension the mean and log standard deviation of System 2's action, trained by
likelihood. Training is weighted by age and stops early on validation loss; Platt scaling on validation (of
the top logit, or of the Gaussian's mean log standard deviation) calibrates the confidence System 1's policy
threshold is set on (`dmn.sleep.evaluate`). The network itself is `dmn.sleep.policy`.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from dmn.bundle.decide import action_span, policy_outputs
from dmn.config import ConsolidateSettings
from dmn.sleep.experience import Experience, targets
from dmn.sleep.policy import Policy, export
from dmn.sleep.states import draw

CHECK_SAMPLES = 16_384
"""Training samples between two validation checks of a long epoch (`_fit`)."""


def train_policy(exp: Experience, train: np.ndarray, val: np.ndarray, far_val: np.ndarray,
                 settings: ConsolidateSettings) -> dict[str, np.ndarray]:
    """Fit the policy on the training steps `train`, stop early on the loss of the validation steps `val`, then
    calibrate its confidence there, given how far each validation state is from its situation (`far_val`, in
    novelty radii). Returns the arrays a bundle holds (`dmn.sleep.policy.export`).

    Discrete world: one logistic output per action, on `targets`. Continuous world: a Gaussian head, the mean
    and log standard deviation of System 2's action (in units of its range) per dimension, by likelihood.

    It learns from at most `policy_sample` training steps and checks itself on at most as many validation
    steps, drawn where there are more: only their states are taken into memory.
    """
    torch.manual_seed(settings.seed)
    train = train[draw(len(train), settings.policy_sample, settings.seed)]
    checked = draw(len(val), settings.policy_sample, settings.seed)
    val, far_val = val[checked], far_val[checked]
    x, x_val = exp.states.take(train), exp.states.take(val)
    mean, std = x.mean(0), x.std(0) + 1e-6
    xv = torch.from_numpy(x_val)
    wt = torch.from_numpy((exp.weight[train] / exp.weight[train].mean()).astype(np.float32))
    if exp.action_dim:
        a, low, span = exp.action_dim, exp.low, action_span(exp.low, exp.high)
        u = lambda rows: torch.from_numpy(((exp.target[rows] - low) / span).astype(np.float32))  # noqa: E731
        yt, yv = u(train), u(val)
        model = Policy(exp.dim, 2 * a, settings.policy_hidden, mean, std)
        loss = lambda out, y: _gaussian_nll(out, y, a).sum(1)  # noqa: E731
    else:
        yt = torch.from_numpy(targets(exp, settings.soft_weight, train).astype(np.float32))
        yv = torch.from_numpy(exp.acceptable[val].astype(np.float32))
        model = Policy(exp.dim, len(exp.actions), settings.policy_hidden, mean, std)
        loss = lambda out, y: F.binary_cross_entropy_with_logits(out, y, reduction="none").sum(1)  # noqa: E731
    _fit(model, x, yt, wt, xv, yv, loss, settings)
    weights = export(model, (1.0, 0.0, 0.0), exp.low, exp.high)
    if len(val):
        action, top = policy_outputs(weights, x_val)
        weights["scale"], weights["distance"], weights["shift"] = _calibration(top, far_val, exp.right(action, val))
    return weights


def _fit(model: Policy, x: np.ndarray, yt: torch.Tensor, wt: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor,
         loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], settings: ConsolidateSettings) -> None:
    """Adam on the age-weighted `loss` of the training states `x`; keep the weights of the best validation loss,
    stopping after three checks without improvement. Validation is checked every epoch, or every
    `CHECK_SAMPLES` training samples where an epoch is longer: three epochs of a large night confirming that
    nothing improves would cost as much as the rest of its training."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5, fused=True)  # one kernel per step
    best, best_loss, patience, seen = None, math.inf, 0, 0
    check_every = min(len(x), CHECK_SAMPLES)
    batches = (b for _ in range(settings.policy_epochs) for b in torch.randperm(len(x)).split(settings.policy_batch))
    for batch in batches:
        step_loss = (loss(model(torch.from_numpy(x[batch.numpy()])), yt[batch]) * wt[batch]).mean()
        opt.zero_grad()
        step_loss.backward()
        opt.step()
        if (seen := seen + len(batch)) < check_every:
            continue
        seen = 0
        with torch.no_grad():
            val_loss = loss(model(xv), yv).mean().item() / yv.shape[1] if len(xv) else 0.0  # per target
        if val_loss < best_loss - 1e-4:
            best, best_loss, patience = {k: v.clone() for k, v in model.state_dict().items()}, val_loss, 0
        elif (patience := patience + 1) >= 3:
            break
    model.load_state_dict(best)


def _gaussian_nll(out: torch.Tensor, y: torch.Tensor, a: int) -> torch.Tensor:
    """Per dimension, the negative log-likelihood of `y` under the head's Gaussian: mean `out[:, :a]`, log
    standard deviation `out[:, a:]` (held between e^-7 and e^2)."""
    log_std = out[:, a:].clamp(-7, 2)
    return 0.5 * ((y - out[:, :a]) / log_std.exp()) ** 2 + log_std


def _calibration(top: np.ndarray, far: np.ndarray, right: np.ndarray) -> tuple[float, float, float]:
    """Platt scaling (1999) of the confidence System 1 acts on, with the state's distance from its situation
    as a second input: the (scale, distance, shift) whose sigmoid(scale * top + distance * far + shift) best
    predicts, by log-loss on validation, whether the policy's answer was right (`top`: its top logit, or in
    a continuous world minus its mean log standard deviation). Platt's smoothed targets keep a validation
    set where every answer was right from promising certainty. An input that does not rank right answers
    the right way round (a larger `top` less often right, a farther state more often) is left out."""
    hits = right.sum()
    target = np.where(right, (hits + 1) / (hits + 2), 1 / (len(right) - hits + 2))
    inputs, signs = np.c_[top, far], (1, -1)  # a larger top should be more often right, a farther state less
    for keep in ([0, 1], [0], [1], []):
        coef, shift = _logistic(inputs[:, keep], target)
        if all(signs[k] * c > 0 for k, c in zip(keep, coef)):
            fitted = dict(zip(keep, coef))
            return fitted.get(0, 0.0), fitted.get(1, 0.0), shift
    raise AssertionError("unreachable: a constant has no sign to get wrong")


def _logistic(x: np.ndarray, target: np.ndarray) -> tuple[list[float], float]:
    """Unpenalised logistic regression of the soft `target` on the columns of `x` (none: a constant)."""
    if x.shape[1] == 0:
        return [], float(np.log(target.mean() / (1 - target.mean())))
    # Soft targets as weights on both outcomes of each step.
    fit = LogisticRegression(C=1e6).fit(np.r_[x, x], np.r_[np.ones(len(x)), np.zeros(len(x))],
                                        sample_weight=np.r_[target, 1 - target])
    return fit.coef_[0].tolist(), float(fit.intercept_[0])
