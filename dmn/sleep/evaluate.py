"""Honest figures for System 1: split by episode and time, thresholds on validation, figures on test.

The newest episodes are held out (dealt to test and validation), the rest is training: a reflex is
judged on situations that came after everything it learned from, as it will be used. Coverage is the
share of System 2's decisions System 1 answers; precision is how often its answer is System 2's; each
held-out step counts for the steps of the agent's life it stands for (`Experience.represents`).
Confidence thresholds are the ones that answer the most while validation precision, a Wilson bound
below, still reaches the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import precision_recall_fscore_support
from sklearn.model_selection import train_test_split

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
    """Row indices of train / validation / test: whole episodes each, the newest held out.

    The newest episodes holding `validation_share + test_share` of the labelled steps are held out
    (shares of steps, not of episodes: an episode System 1 mostly served leaves only a few labelled
    steps), and dealt alternately to test and validation, newest first, so that thresholds are set on
    the same recent life the test judges.
    """
    order = np.argsort(exp.ts, kind="stable")
    episodes, first, steps = np.unique(exp.episode[order], return_index=True, return_counts=True)
    newest_first = np.argsort(-first, kind="stable")  # episodes by when they first appear, newest first
    if len(episodes) < 3:
        raise ValueError(f"{len(episodes)} episode(s): at least 3 are needed to train, validate and test")
    share = np.cumsum(steps[newest_first]) / len(exp.label)
    n_held = int(np.clip(np.searchsorted(share, settings.validation_share + settings.test_share) + 1, 2,
                         len(episodes) - 1))
    train, held = train_test_split(episodes[newest_first[::-1]], test_size=n_held, shuffle=False)
    newest = held[::-1]
    return Split(*(np.flatnonzero(np.isin(exp.episode, part)) for part in (train, newest[1::2], newest[0::2])))


def thresholds(table: Answers, policy: Answers, truth: np.ndarray, weight: np.ndarray, target: float,
               z: float) -> tuple[float, float]:
    """The (table, policy) confidence thresholds at which System 1 as a whole (table first, then the
    policy on what the table leaves) answers the most validation steps (weighted by `weight`) with
    `target` precision — by the Wilson lower bound `z` standard errors down, over the effective number
    of steps, so that a small validation set cannot pass by luck.

    `table` and `policy` are each part's answers on its own (confidence NaN where it cannot answer at
    any threshold). Every table threshold worth trying is tried; for each, the policy's is the lowest
    at which the combined precision still meets the target. (inf: that part never answers.)
    """
    best = (0.0, np.inf, np.inf)
    t_conf = np.where(np.isnan(table.confidence), -np.inf, table.confidence)
    for t in np.append(np.unique(t_conf[np.isfinite(t_conf)]), np.inf):
        by_table = t_conf >= t
        w = weight[by_table]
        right, answered, squares = (w * (table.action[by_table] == truth[by_table])).sum(), w.sum(), (w * w).sum()
        if answered and wilson_lower(right / answered, answered**2 / squares, z) < target:
            continue
        left = ~by_table & ~np.isnan(policy.confidence)
        conf = policy.confidence[left]
        order = np.argsort(-conf, kind="stable")
        w = weight[left][order]
        hits = right + np.cumsum(w * (policy.action[left][order] == truth[left][order]))
        total, total_squares = answered + np.cumsum(w), squares + np.cumsum(w * w)
        ok = wilson_lower(hits / total, total**2 / total_squares, z) >= target
        ok &= np.append(conf[order][1:] < conf[order][:-1], True)  # cut only between distinct confidences
        cut = int(np.flatnonzero(ok)[-1]) if ok.any() else -1
        covered = total[cut] if cut >= 0 else answered
        if covered > best[0]:
            best = (covered, float(t), float(conf[order][cut]) if cut >= 0 else np.inf)
    return best[1], best[2]


def curve(answers: Answers, truth: np.ndarray, weight: np.ndarray, points: int = 50) -> list[dict[str, float]]:
    """The trade-off behind the policy's threshold: coverage and precision of System 1 if the policy
    answered only at or above each confidence (at most `points`, by quantile), the table's answers as they are."""
    by_table = answers.source == "table"
    by_policy = answers.source == "policy"
    right = answers.action == truth
    out = []
    conf = answers.confidence[by_policy]
    for t in np.unique(np.quantile(conf, np.linspace(0, 1, points))) if len(conf) else []:
        keep = by_table | (by_policy & (np.nan_to_num(answers.confidence, nan=-1.0) >= t))
        out.append({"threshold": float(t), "coverage": float(weight[keep].sum() / weight.sum()),
                    "precision": float((weight[keep] * right[keep]).sum() / weight[keep].sum())})
    return out


def metrics(answers: Answers, truth: np.ndarray, actions: list[str], weight: np.ndarray) -> dict:
    """Coverage, precision, expected calibration error and per-action figures of `answers` against
    `truth`, each step counted `weight` times (`Experience.represents`)."""
    answered = ~np.isnan(answers.confidence)
    n, m = len(truth), int(answered.sum())
    w = weight[answered]
    correct = answers.action[answered] == truth[answered]
    out = {"decisions": n, "answered": m, "coverage": float(w.sum() / weight.sum()) if n else 0.0,
           "precision": float((w * correct).sum() / w.sum()) if m else None, "calibration_error": None,
           "per_action": {}}
    if m:
        out["calibration_error"] = _ece(correct, answers.confidence[answered], w)
        labels = list(range(len(actions)))
        p, r, _, _ = precision_recall_fscore_support(truth[answered], answers.action[answered], labels=labels,
                                                     sample_weight=w, zero_division=0)
        decided = np.bincount(truth, minlength=len(actions))
        out["per_action"] = {actions[i]: {"precision": float(p[i]), "recall": float(r[i]),
                                          "answered": int((answers.action[answered] == i).sum()),
                                          "decisions": int(decided[i])} for i in labels}
    return out


def _ece(correct: np.ndarray, confidence: np.ndarray, weight: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the weighted gap between confidence and accuracy per confidence bin.
    (Written out because scikit-learn's `calibration_curve` takes no sample weights.)"""
    which = np.clip((np.clip(confidence, 0, 1) * bins).astype(int), 0, bins - 1)
    mass = np.bincount(which, weights=weight, minlength=bins)
    gap = np.bincount(which, weights=weight * (correct - confidence), minlength=bins)
    return float(np.abs(gap).sum() / mass.sum())
