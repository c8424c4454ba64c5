"""Distil System 2 into the policy network: its training targets, the training loop, and calibration.

Targets mix System 2's choice with a softmax of its candidates' scores; training is weighted by age and
stops early on validation loss; a temperature fitted on validation calibrates the probabilities that
System 1's policy threshold is set on (`dmn.sleep.evaluate`). The network itself is `dmn.sleep.policy`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import log_loss

from dmn.config import ConsolidateSettings
from dmn.sleep.experience import Experience
from dmn.sleep.policy import Policy, export


def targets(exp: Experience, soft_weight: float) -> np.ndarray:
    """(n, actions) training targets: System 2's choice, mixed with a softmax of its candidates' scores.

    Scores are divided by the spread of their differences within a step (over the whole world), so
    the softness means the same in every world and says how much better one candidate looked than the
    others there; vetoed candidates get nothing (unless all were vetoed).
    """
    n, a = len(exp.label), len(exp.actions)
    hard = np.eye(a)[exp.label]
    if not len(exp.sim_step) or soft_weight == 0:
        return hard
    per_step = np.bincount(exp.sim_step, minlength=n)
    step_mean = np.bincount(exp.sim_step, weights=exp.sim_score, minlength=n) / np.maximum(per_step, 1)
    scale = (exp.sim_score - step_mean[exp.sim_step]).std() or 1.0
    logits = np.full((n, a), -np.inf)
    allowed = ~exp.sim_vetoed
    all_vetoed = np.ones(n, bool)
    np.logical_and.at(all_vetoed, exp.sim_step, exp.sim_vetoed)
    allowed |= all_vetoed[exp.sim_step]
    logits[exp.sim_step[allowed], exp.sim_action[allowed]] = exp.sim_score[allowed] / scale
    has = np.isfinite(logits).any(1)
    soft = np.zeros((n, a))
    soft[has] = np.exp(logits[has] - logits[has].max(1, keepdims=True))
    soft[has] /= soft[has].sum(1, keepdims=True)
    mixed = hard.copy()
    mixed[has] = (1 - soft_weight) * hard[has] + soft_weight * soft[has]
    return mixed


def train_policy(x: np.ndarray, y: np.ndarray, w: np.ndarray, x_val: np.ndarray, label_val: np.ndarray,
                 settings: ConsolidateSettings) -> dict[str, np.ndarray]:
    """Fit the policy on soft targets `y` (weighted by `w`), stop early on validation loss, then pick the
    temperature that minimises validation log-loss. Returns the arrays a bundle holds (`dmn.sleep.policy.export`)."""
    torch.manual_seed(settings.seed)
    mean, std = x.mean(0), x.std(0) + 1e-6
    norm = lambda v: torch.from_numpy(((v - mean) / std).astype(np.float32))  # noqa: E731
    xt, yt, wt = norm(x), torch.from_numpy(y.astype(np.float32)), torch.from_numpy((w / w.mean()).astype(np.float32))
    xv = norm(x_val)
    model = Policy(x.shape[1], y.shape[1], settings.policy_hidden)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    best, best_loss, patience = None, math.inf, 0
    for _ in range(settings.policy_epochs):
        for batch in torch.randperm(len(xt)).split(settings.policy_batch):
            loss = (-(yt[batch] * F.log_softmax(model(xt[batch]), 1)).sum(1) * wt[batch]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            val_loss = F.cross_entropy(model(xv), torch.from_numpy(label_val)).item() if len(xv) else 0.0
        if val_loss < best_loss - 1e-4:
            best, best_loss, patience = {k: v.clone() for k, v in model.state_dict().items()}, val_loss, 0
        elif (patience := patience + 1) >= 3:
            break
    model.load_state_dict(best)
    return export(model, mean, std, _temperature(model, xv, label_val, y.shape[1]))


def _temperature(model: Policy, x_val: torch.Tensor, label_val: np.ndarray, actions: int) -> float:
    """Temperature scaling (Guo et al., 2017): the T on a log grid with the lowest validation log-loss."""
    if not len(x_val):
        return 1.0
    with torch.no_grad():
        logits = model(x_val).numpy().astype(np.float64)
    best_t, best_loss = 1.0, math.inf
    for t in np.geomspace(0.05, 20, 61):
        z = logits / t
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        loss = log_loss(label_val, p, labels=list(range(actions)))
        if loss < best_loss:
            best_t, best_loss = float(t), loss
    return best_t
