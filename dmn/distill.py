"""Distil System 2 into System 1: a heuristic table over situations, and a small policy network.

The table says, for each situation (a k-means cluster of decision states), what System 2 did there
and how sure it was; the network generalises between situations. Both learn from the same labelled
steps (`dmn.experience`); torch is needed here only, never at lookup time.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from sklearn.metrics import log_loss
from torch import nn

from dmn.config import ConsolidateSettings
from dmn.evaluate import wilson_lower
from dmn.experience import Experience

def heuristic_table(exp: Experience, rows: np.ndarray, cluster: np.ndarray, distance: np.ndarray, k: int,
                    outcome: np.ndarray, outcome_types: int, settings: ConsolidateSettings) -> pa.Table:
    """One row per situation, from the training steps `rows` (their nearest `cluster` and `distance`).

    `outcome` is the outcome type of every simulation (-1 where nothing was imagined).
    """
    a = len(exp.actions)
    w, label = exp.weight[rows], exp.label[rows]
    support = np.bincount(cluster, weights=w, minlength=k)
    count = np.bincount(cluster, minlength=k)
    hist = np.zeros((k, a))
    np.add.at(hist, (cluster, label), w)
    best = hist.argmax(1)
    agreement = hist.max(1) / np.maximum(support, 1e-12)
    n_eff = support**2 / np.maximum(np.bincount(cluster, weights=w * w, minlength=k), 1e-12)

    # Simulations of the training steps: per (situation, action) mean score, veto rate, outcome types.
    step_cluster = np.full(len(exp.label), -1)
    step_cluster[rows] = cluster
    sim_cluster = step_cluster[exp.sim_step]
    keep = sim_cluster >= 0
    sc, sa, sw = sim_cluster[keep], exp.sim_action[keep], exp.weight[exp.sim_step[keep]]
    sims = np.zeros((k, a))
    np.add.at(sims, (sc, sa), sw)
    score = np.zeros((k, a))
    np.add.at(score, (sc, sa), sw * exp.sim_score[keep])
    vetoes = np.zeros((k, a))
    np.add.at(vetoes, (sc, sa), sw * exp.sim_vetoed[keep])
    with np.errstate(invalid="ignore", divide="ignore"):
        score_mean, veto_rate = score / sims, vetoes / sims
    kinds = np.zeros((k, a, outcome_types))
    typed = outcome[keep] >= 0
    np.add.at(kinds, (sc[typed], sa[typed], outcome[keep][typed]), sw[typed])
    kinds /= np.maximum(kinds.sum(2, keepdims=True), 1e-12)

    radius = np.zeros(k)
    last_seen = np.zeros(k)
    order = np.argsort(cluster, kind="stable")
    bounds = np.searchsorted(cluster[order], np.arange(k + 1))
    reward = exp.reward[rows]
    reward_mean = np.full(k, np.nan)
    for c in range(k):
        members = order[bounds[c]:bounds[c + 1]]
        if len(members):
            radius[c] = np.quantile(distance[members], settings.radius_quantile)
            last_seen[c] = exp.ts[rows][members].max()
            known = reward[members][~np.isnan(reward[members])]
            reward_mean[c] = known.mean() if len(known) else np.nan
    avoid = [[exp.actions[j] for j in range(a) if veto_rate[c, j] >= settings.avoid_veto_rate] for c in range(k)]
    audited = exp.reflex[rows] >= 0  # live feedback: where System 1 was checked against System 2
    audits = np.bincount(cluster[audited], minlength=k)
    agreed = np.bincount(cluster[audited & (exp.reflex[rows] == label)], minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        live = agreed / audits
    demoted = (audits >= settings.demote_audits) & (live < settings.precision_target)
    return pa.table({
        "cluster": pa.array(np.arange(k), pa.int32()),
        "support": support, "count": pa.array(count, pa.int64()),
        "best_action": pa.array([exp.actions[j] for j in best], pa.string()),
        "agreement": agreement, "confidence": wilson_lower(agreement, n_eff),
        "action_weights": pa.array(hist.tolist(), pa.list_(pa.float64())),
        "score_mean": pa.array(_nulls(score_mean), pa.list_(pa.float64())),
        "veto_rate": pa.array(_nulls(veto_rate), pa.list_(pa.float64())),
        "avoid": pa.array(avoid, pa.list_(pa.string())),
        "outcome_types": pa.array(kinds.tolist(), pa.list_(pa.list_(pa.float64()))),
        "radius": radius,
        "last_seen": pa.array((last_seen * 1e6).astype(np.int64), pa.timestamp("us", tz="UTC")),
        "reward_mean": pa.array(reward_mean, pa.float64(), from_pandas=True),  # NaN (no outcomes) -> NULL
        "audits": pa.array(audits, pa.int64()),
        "live_agreement": pa.array(live, pa.float64(), from_pandas=True),
        "demoted": demoted,
    })


def outcome_table(exp: Experience, outcome: np.ndarray, outcome_types: int) -> pa.Table:
    """One row per outcome type: how often it was imagined, its mean score and veto rate."""
    typed = outcome >= 0
    w = exp.weight[exp.sim_step[typed]]
    weight = np.bincount(outcome[typed], weights=w, minlength=outcome_types)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.bincount(outcome[typed], weights=w * exp.sim_score[typed], minlength=outcome_types) / weight
        veto = np.bincount(outcome[typed], weights=w * exp.sim_vetoed[typed], minlength=outcome_types) / weight
    return pa.table({"outcome_type": pa.array(np.arange(outcome_types), pa.int32()), "weight": weight,
                     "score_mean": pa.array(score, pa.float64(), from_pandas=True),
                     "veto_rate": pa.array(veto, pa.float64(), from_pandas=True)})


def _nulls(values: np.ndarray) -> list:
    """Rows of a 2-D array as lists, NaN as None (NULL in Parquet)."""
    return [[None if math.isnan(v) else float(v) for v in row] for row in values]


# -- the policy network ---------------------------------------------------------------------------

class Policy(nn.Module):
    def __init__(self, dim: int, actions: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, actions))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


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
    temperature that minimises validation log-loss. Returns numpy weights for `dmn.policy`."""
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
    linear = [m for m in model.net if isinstance(m, nn.Linear)]
    weights = {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}
    for i, layer in enumerate(linear, 1):
        weights[f"w{i}"] = layer.weight.detach().numpy().T.copy()
        weights[f"b{i}"] = layer.bias.detach().numpy().copy()
    weights["temperature"] = np.float32(_temperature(model, xv, label_val, y.shape[1]))
    return weights


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
