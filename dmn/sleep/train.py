"""Distil System 2 into the policy network: its training targets, the training loop, and calibration.

The network has one logistic output per action: the chance that the action is as good as System 2's choice
there (`dmn.sleep.experience.acceptable`). Targets mix that (hard) with how close to System 2's best each
action scored (soft); training is weighted by age and stops early on validation loss; Platt scaling of the
top logit on validation calibrates the confidence System 1's policy threshold is set on
(`dmn.sleep.evaluate`). The network itself is `dmn.sleep.policy`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from dmn.config import ConsolidateSettings
from dmn.sleep.experience import Experience
from dmn.sleep.policy import Policy, export


def targets(exp: Experience, soft_weight: float) -> np.ndarray:
    """(n, actions) training targets in [0, 1]: whether each action was acceptable at each step (hard),
    mixed with how close to System 2's best it scored, exp(-gap in stakes) (soft).

    The policy learns, for every action, the chance that it is as good as System 2's choice: where System 2
    was nearly indifferent, several actions are, and System 1 may be sure of either.
    """
    return (1 - soft_weight) * exp.acceptable + soft_weight * np.exp(-exp.gap)


def train_policy(x: np.ndarray, y: np.ndarray, w: np.ndarray, x_val: np.ndarray, right_val: np.ndarray,
                 far_val: np.ndarray, settings: ConsolidateSettings) -> dict[str, np.ndarray]:
    """Fit the policy on targets `y` (weighted by `w`; one logistic output per action), stop early on the
    validation loss against `right_val` (the acceptable actions there), then calibrate its confidence on
    the validation states, given how far each is from its situation (`far_val`, in novelty radii). Returns the arrays a bundle holds (`dmn.sleep.policy.export`)."""
    torch.manual_seed(settings.seed)
    mean, std = x.mean(0), x.std(0) + 1e-6
    norm = lambda v: torch.from_numpy(((v - mean) / std).astype(np.float32))  # noqa: E731
    xt, yt, wt = norm(x), torch.from_numpy(y.astype(np.float32)), torch.from_numpy((w / w.mean()).astype(np.float32))
    xv, yv = norm(x_val), torch.from_numpy(right_val.astype(np.float32))
    model = Policy(x.shape[1], y.shape[1], settings.policy_hidden)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    best, best_loss, patience = None, math.inf, 0
    for _ in range(settings.policy_epochs):
        for batch in torch.randperm(len(xt)).split(settings.policy_batch):
            loss = (F.binary_cross_entropy_with_logits(model(xt[batch]), yt[batch], reduction="none").sum(1)
                    * wt[batch]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            val_loss = F.binary_cross_entropy_with_logits(model(xv), yv).item() if len(xv) else 0.0
        if val_loss < best_loss - 1e-4:
            best, best_loss, patience = {k: v.clone() for k, v in model.state_dict().items()}, val_loss, 0
        elif (patience := patience + 1) >= 3:
            break
    model.load_state_dict(best)
    return export(model, mean, std, _calibration(model, xv, right_val, far_val))


def _calibration(model: Policy, x_val: torch.Tensor, right_val: np.ndarray, far: np.ndarray
                 ) -> tuple[float, float, float]:
    """Platt scaling (1999) of the confidence System 1 acts on, with the state's distance from its situation
    as a second input: the (scale, distance, shift) whose sigmoid(scale * top logit + distance * far + shift)
    best predicts, by log-loss on validation, whether the policy's action was acceptable. Platt's smoothed
    targets keep a validation set where every answer was right from promising certainty. Without
    validation steps, (1, 0, 0); an input that does not rank right answers the right way round (a larger
    logit less often right, a farther state more often) is left out."""
    if not len(x_val):
        return 1.0, 0.0, 0.0
    with torch.no_grad():
        logits = model(x_val).numpy().astype(np.float64)
    chosen = logits.argmax(1)
    top, right = logits[np.arange(len(chosen)), chosen], right_val[np.arange(len(chosen)), chosen]
    hits = right.sum()
    target = np.where(right, (hits + 1) / (hits + 2), 1 / (len(right) - hits + 2))
    inputs, signs = np.c_[top, far], (1, -1)  # a larger logit should be more often right, a farther state less
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
