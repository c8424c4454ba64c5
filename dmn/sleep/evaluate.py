"""Honest figures for System 1: split by episode and time, thresholds on validation, figures on test.

The newest episodes are held out, dealt in turn with training (`split`): a reflex is judged on the most
recent life, as it will be used, and half of that life still teaches it. Coverage is the
share of System 2's decisions System 1 answers; precision is how often its answer is acceptable there (as
good as System 2's choice by System 2's own scores, `Experience.acceptable`), exact precision how often it
is System 2's choice itself; each held-out step counts for the steps of the agent's life it stands for
(`Experience.represents`).
Confidence thresholds are the ones that answer the most while validation precision, a Wilson bound
below, still reaches the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dmn.bundle.decide import Answers
from dmn.config import ConsolidateSettings
from dmn.sleep.experience import Experience

Z95 = 1.959964  # two-sided 95% normal quantile, for Wilson bounds


def wilson_lower(p: np.ndarray, n: np.ndarray, z: float = Z95) -> np.ndarray:
    """Lower end of the Wilson score interval (z standard errors; 95% by default) of a proportion p over n trials."""
    n = np.maximum(n, 1e-12)
    z2 = z**2
    centre = p + z2 / (2 * n)
    spread = z * np.sqrt(np.maximum(p * (1 - p) / n + z2 / (4 * n * n), 0))
    return (centre - spread) / (1 + z2 / n)


@dataclass
class Split:
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def split(exp: Experience, settings: ConsolidateSettings) -> Split:
    """Row indices of train / validation / test: whole episodes each.

    The newest episodes are dealt in turn to test, training, validation and training again, newest first,
    until test and validation hold `validation_share + test_share` of the labelled steps (shares of steps,
    not of episodes: an episode System 1 mostly served leaves only a few labelled steps); the older ones
    are training. So the held-out steps are the most recent life, as tomorrow's will be, and half of
    that recent life still teaches: the hard states of the last day, where System 1 was silent or
    audited, are in the training set too, not only in the test.
    """
    n = len(exp.label)
    rank = np.empty(n, np.int64)
    rank[np.argsort(exp.ts, kind="stable")] = np.arange(n)  # each step's place in time
    episodes, episode, steps = np.unique(exp.episode, return_inverse=True, return_counts=True)
    if len(episodes) < 3:
        raise ValueError(f"{len(episodes)} episode(s): at least 3 are needed to train, validate and test")
    first = np.full(len(episodes), n)
    np.minimum.at(first, episode, rank)
    part = np.zeros(len(episodes), np.int64)  # of each episode: 0 train, 1 validation, 2 test
    held, wanted = 0, (settings.validation_share + settings.test_share) * n
    for turn, e in enumerate(np.argsort(-first)):  # newest first
        part[e] = (2, 0, 1, 0)[turn % 4] if held < wanted or turn < 3 else 0
        held += steps[e] if part[e] else 0
    part = part[episode]
    return Split(*(np.flatnonzero(part == p) for p in range(3)))


def thresholds(table: Answers, policy: Answers, exp: Experience, rows: np.ndarray, target: float,
               z: float, floor: float) -> tuple[float, float]:
    """The (table, policy) confidence thresholds at which System 1 as a whole (table first, then the
    policy on what the table leaves) answers the most of the validation steps `rows` (each weighted by the
    steps it stands for, `Experience.represents`) with
    `target` precision — by the Wilson lower bound `z` standard errors down, over the effective number
    of steps, so that a small validation set cannot pass by luck.

    The table answers only from situations whose own confidence (a Wilson bound on their agreement) reaches
    `target`: a situation answers all its states alike, and where the agent's own answers take it, the
    states of one situation can weigh more than the held-out steps say. Until System 1 has been seen live
    (no validation step audited it), the policy too answers only where its calibrated chance reaches
    `target`: held-out steps that System 2 alone chose cannot show where System 1's own answers take the
    agent, and there it errs more; audited steps can (each stands for the reflex-served steps around it).
    After that, only where that chance reaches `floor`: the average may carry less sure answers, but not
    answers more often wrong than right, which hold the target only in the held-out mix of states; where
    they lead the agent, that mix tilts towards them.

    `table` and `policy` are each part's answers on its own (confidence NaN where it cannot answer at
    any threshold). Every table threshold worth trying is tried; for each, the policy's is the lowest
    at which the combined precision still meets the target. (inf: that part never answers.)
    """
    best = (0.0, np.inf, np.inf)
    weight, seen_live = exp.represents[rows], bool((exp.reflex[rows] >= 0).any())
    t_conf = np.where(np.isnan(table.confidence), -np.inf, table.confidence)
    table_right, policy_right = exp.right(table.action, rows), exp.right(policy.action, rows)
    for t in np.append(np.unique(t_conf[t_conf >= target]), np.inf):
        by_table = t_conf >= t
        w = weight[by_table]
        hits, answered, squares = (w * table_right[by_table]).sum(), w.sum(), (w * w).sum()
        if answered and wilson_lower(hits / answered, answered**2 / squares, z) < target:
            continue
        left = ~by_table & (np.nan_to_num(policy.confidence, nan=-np.inf) >= (floor if seen_live else target))
        conf = policy.confidence[left]
        order = np.argsort(-conf, kind="stable")
        w = weight[left][order]
        hits = hits + np.cumsum(w * policy_right[left][order])
        total, total_squares = answered + np.cumsum(w), squares + np.cumsum(w * w)
        ok = wilson_lower(hits / total, total**2 / total_squares, z) >= target
        ok &= np.append(conf[order][1:] < conf[order][:-1], True)  # cut only between distinct confidences
        cut = int(np.flatnonzero(ok)[-1]) if ok.any() else -1
        covered = total[cut] if cut >= 0 else answered
        if covered > best[0]:
            best = (covered, float(t), float(conf[order][cut]) if cut >= 0 else np.inf)
    return best[1], best[2]


def curve(answers: Answers, exp: Experience, rows: np.ndarray, points: int = 50) -> list[dict[str, float]]:
    """The trade-off behind the policy's threshold: coverage and precision of System 1 on the steps `rows` if
    the policy answered only at or above each confidence (at most `points`, by quantile), the table's
    answers as they are."""
    by_table = answers.source == "table"
    by_policy = answers.source == "policy"
    good, weight = exp.right(answers.action, rows), exp.represents[rows]
    out = []
    conf = answers.confidence[by_policy]
    for t in np.unique(np.quantile(conf, np.linspace(0, 1, points))) if len(conf) else []:
        keep = by_table | (by_policy & (np.nan_to_num(answers.confidence, nan=-1.0) >= t))
        out.append({"threshold": float(t), "coverage": float(weight[keep].sum() / weight.sum()),
                    "precision": float((weight[keep] * good[keep]).sum() / weight[keep].sum())})
    return out


def metrics(answers: Answers, exp: Experience, rows: np.ndarray) -> dict:
    """Coverage, precision (answers as good as System 2's choice), expected calibration error of `answers` on
    the steps `rows`, each counted for the steps it stands for (`Experience.represents`); and beside them, in
    a discrete world exact precision (System 2's own choice) and per-action figures, in a continuous one the
    mean distance of the answers from System 2's actions (`Experience.distance`)."""
    weight = exp.represents[rows]
    answered = ~np.isnan(answers.confidence)
    n, m = len(rows), int(answered.sum())
    w = weight[answered]
    good = exp.right(answers.action, rows)[answered]
    out = {"decisions": n, "answered": m, "coverage": float(w.sum() / weight.sum()) if n else 0.0,
           "precision": float((w * good).sum() / w.sum()) if m else None, "calibration_error": None}
    if m:
        out["calibration_error"] = _ece(good, answers.confidence[answered], w)
    if exp.action_dim:
        error = exp.distance(answers.action[answered], rows[answered])
        out["action_error"] = float((w * error).sum() / w.sum()) if m else None
        return out
    label, action = exp.label[rows], answers.action[answered]
    out["exact_precision"] = float((w * (action == label[answered])).sum() / w.sum()) if m else None
    decided = np.bincount(label, minlength=len(exp.actions))
    out["per_action"] = {a: {"precision": float((w[action == i] * good[action == i]).sum() / w[action == i].sum())
                             if (action == i).any() else None,
                             "answered": int((action == i).sum()), "decisions": int(decided[i])}
                         for i, a in enumerate(exp.actions)} if m else {}
    return out


def _ece(correct: np.ndarray, confidence: np.ndarray, weight: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the weighted gap between confidence and accuracy per confidence bin.
    (Written out because scikit-learn's `calibration_curve` takes no sample weights.)"""
    which = np.clip((np.clip(confidence, 0, 1) * bins).astype(int), 0, bins - 1)
    mass = np.bincount(which, weights=weight, minlength=bins)
    gap = np.bincount(which, weights=weight * (correct - confidence), minlength=bins)
    return float(np.abs(gap).sum() / mass.sum())
