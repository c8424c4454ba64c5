"""The heuristic table: for each situation (a k-means cluster of decision states), what System 2 did there,
how surely, what it avoided, and what it imagined would follow; and the table of outcome types.

It learns from the same labelled steps as the policy network (`dmn.sleep.experience`), which generalises
between situations (`dmn.sleep.policy`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from dmn.config import ConsolidateSettings
from dmn.sleep.evaluate import wilson_lower
from dmn.sleep.experience import Experience, targets


def heuristic_table(exp: Experience, rows: np.ndarray, cluster: np.ndarray, distance: np.ndarray, k: int,
                    outcome: np.ndarray, outcome_types: int, settings: ConsolidateSettings) -> pa.Table:
    """One row per situation, from the training steps `rows` (their nearest `cluster` and `distance`).

    `outcome` is the outcome type of every simulation (-1 where nothing was imagined).
    """
    a = max(len(exp.actions), 1)  # a continuous world's candidates are one kind of thing: sim_action 0
    w = exp.weight[rows]
    radius, core, last_seen, reward_mean = np.zeros(k), np.zeros(k), np.zeros(k), np.full(k, np.nan)
    order = np.argsort(cluster, kind="stable")
    bounds = np.searchsorted(cluster[order], np.arange(k + 1))
    reward = exp.reward[rows]
    for c in range(k):
        members = order[bounds[c]:bounds[c + 1]]
        if len(members):
            radius[c], core[c] = np.quantile(distance[members], [settings.radius_quantile, settings.core_quantile])
            last_seen[c] = exp.ts[rows][members].max()
            known = reward[members][~np.isnan(reward[members])]
            reward_mean[c] = known.mean() if len(known) else np.nan
    support = np.bincount(cluster, weights=w, minlength=k)
    count = np.bincount(cluster, minlength=k)
    # What System 2 did in the core, where the table answers: at a situation's edge, where it meets others,
    # its best action can be another.
    inner = distance <= core[cluster]
    held = np.bincount(cluster[inner], weights=w[inner], minlength=k)
    best, agreement, beside = (_vector_choice(exp, rows[inner], cluster[inner], held) if exp.action_dim else
                               _label_choice(exp, rows[inner], cluster[inner], held, settings.soft_weight))
    n_eff = held**2 / np.maximum(np.bincount(cluster[inner], weights=w[inner] ** 2, minlength=k), 1e-12)

    # Simulations of the training steps: per (situation, action) mean score, veto rate, outcome types.
    sim_cluster = _sim_situations(exp, rows, cluster)
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

    avoid = [[name for j, name in enumerate(exp.actions) if veto_rate[c, j] >= settings.avoid_veto_rate] for c in range(k)]
    audited = exp.reflex[rows] >= 0  # live feedback: where System 1 was checked against System 2
    audits = np.bincount(cluster[audited], minlength=k)
    agreed = np.bincount(cluster[audited][exp.right(exp.reflexes(rows[audited]), rows[audited])], minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        live = agreed / audits
    demoted = (audits >= settings.demote_audits) & (live < settings.precision_target)
    return pa.table({
        "cluster": pa.array(np.arange(k), pa.int32()),
        "support": support, "count": pa.array(count, pa.int64()),
        "best_action": best, "agreement": agreement, "confidence": wilson_lower(agreement, n_eff), **beside,
        "score_mean": pa.array(_nulls(score_mean), pa.list_(pa.float64())),
        "veto_rate": pa.array(_nulls(veto_rate), pa.list_(pa.float64())),
        "avoid": pa.array(avoid, pa.list_(pa.string())),
        "outcome_types": pa.array(kinds.tolist(), pa.list_(pa.list_(pa.float64()))),
        "radius": radius, "core": core,
        "last_seen": pa.array((last_seen * 1e6).astype(np.int64), pa.timestamp("us", tz="UTC")),
        "reward_mean": pa.array(reward_mean, pa.float64(), from_pandas=True),  # NaN (no outcomes) -> NULL
        "audits": pa.array(audits, pa.int64()),
        "live_agreement": pa.array(live, pa.float64(), from_pandas=True),
        "demoted": demoted,
    })


def _label_choice(exp: Experience, rows: np.ndarray, cluster: np.ndarray, held: np.ndarray, soft_weight: float
                  ) -> tuple[pa.Array, np.ndarray, dict[str, Any]]:
    """Per situation, from the steps `rows` (in situations `cluster`, whose weight per situation is `held`):
    the action System 1 aims for, the best on average by `targets` (acceptable, and of acceptable actions
    the nearer System 2's best); how often it was acceptable (agreement); and beside them how often it was
    System 2's very choice and the weights of System 2's choices."""
    k, held = len(held), np.maximum(held, 1e-12)
    w, label = exp.weight[rows], exp.label[rows]
    chosen = np.zeros((k, len(exp.actions)))
    np.add.at(chosen, (cluster, label), w)
    aim, good = np.zeros((k, len(exp.actions))), np.zeros((k, len(exp.actions)))
    np.add.at(aim, cluster, w[:, None] * targets(exp, soft_weight, rows))
    np.add.at(good, cluster, w[:, None] * exp.acceptable[rows])
    best = aim.argmax(1)
    exact = np.bincount(cluster, weights=w * (label == best[cluster]), minlength=k) / held
    return (pa.array([exp.actions[j] for j in best], pa.string()), good[np.arange(k), best] / held,
            {"exact_agreement": exact, "action_weights": pa.array(chosen.tolist(), pa.list_(pa.float64()))})


def _vector_choice(exp: Experience, rows: np.ndarray, cluster: np.ndarray, held: np.ndarray
                   ) -> tuple[pa.Array, np.ndarray, dict[str, Any]]:
    """Per situation, from the steps `rows` (in situations `cluster`, whose weight per situation is `held`):
    System 2's action (the weighted mean of its actions there), the weighted share of them within tolerance
    of it (agreement), and beside them the spread of its actions, per dimension."""
    k, held = len(held), np.maximum(held, 1e-12)[:, None]
    w, target = exp.weight[rows], exp.target[rows].astype(np.float64)
    mean = np.zeros((k, exp.action_dim))
    np.add.at(mean, cluster, w[:, None] * target)
    mean /= held
    square = np.zeros((k, exp.action_dim))
    np.add.at(square, cluster, w[:, None] * (target - mean[cluster]) ** 2)
    near = exp.right(mean[cluster], rows)
    agreement = np.bincount(cluster, weights=w * near, minlength=k) / held[:, 0]
    return (pa.array(mean.tolist(), pa.list_(pa.float32())), agreement,
            {"spread": pa.array(np.sqrt(square / held).tolist(), pa.list_(pa.float32()))})


def _sim_situations(exp: Experience, rows: np.ndarray, cluster: np.ndarray) -> np.ndarray:
    """The situation of every simulation, its step's (`cluster` of the steps `rows`); -1 for the other steps'."""
    step_cluster = np.full(len(exp.label), -1)
    step_cluster[rows] = cluster
    return step_cluster[exp.sim_step]


def candidate_table(exp: Experience, rows: np.ndarray, cluster: np.ndarray, outcome: np.ndarray,
                    per_situation: int = 64) -> pa.Table:
    """A continuous world's recollection of what System 2 imagined per situation: up to `per_situation` of the
    newest candidates of the training steps `rows` (in situations `cluster`) each, with their score, veto and
    outcome type (-1: nothing imagined), for `Reflexes.imagine` to recall the nearest of."""
    sim_cluster = _sim_situations(exp, rows, cluster)
    order = np.flatnonzero(sim_cluster >= 0)
    order = order[np.argsort(sim_cluster[order], kind="stable")]  # steps are newest first, and so their candidates
    first = np.searchsorted(sim_cluster[order], sim_cluster[order])
    keep = order[np.arange(len(order)) - first < per_situation]
    return pa.table({
        "cluster": pa.array(sim_cluster[keep], pa.int32()),
        "action": pa.FixedSizeListArray.from_arrays(pa.array(exp.sim_vector[keep].reshape(-1), pa.float32()),
                                                    exp.action_dim),
        "score": exp.sim_score[keep], "vetoed": exp.sim_vetoed[keep],
        "outcome": pa.array(outcome[keep], pa.int32()),
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
