"""Honest figures for System 1: split by episode and time, thresholds on validation, figures on test.

The newest episodes are the test set, the ones before them validation, the rest training: a
reflex is judged on situations that came after everything it learned from, as it will be used.
Coverage is the share of System 2's decisions System 1 answers; precision is how often its answer
is System 2's. Confidence thresholds are the lowest that reach the precision target on validation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_fscore_support
from sklearn.model_selection import train_test_split

from dmn.config import ConsolidateSettings
from dmn.experience import Experience
from dmn.reflex import Answers


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
    """Row indices of train / validation / test: whole episodes each, the test ones the newest."""
    by_time = exp.episode[np.argsort(exp.ts, kind="stable")]
    _, first = np.unique(by_time, return_index=True)
    ordered = list(by_time[np.sort(first)])  # episodes in the order they first appear
    if len(ordered) < 3:
        raise ValueError(f"{len(ordered)} episode(s): at least 3 are needed to train, validate and test")
    held = lambda share: max(1, round(share * len(ordered)))  # noqa: E731
    rest, test = train_test_split(ordered, test_size=held(settings.test_share), shuffle=False)
    train, validation = train_test_split(rest, test_size=held(settings.validation_share), shuffle=False)
    return Split(*(np.flatnonzero(np.isin(exp.episode, part)) for part in (train, validation, test)))


def thresholds(table: Answers, policy: Answers, truth: np.ndarray, target: float, z: float) -> tuple[float, float]:
    """The (table, policy) confidence thresholds at which System 1 as a whole (table first, then the
    policy on what the table leaves) answers the most validation steps with `target` precision — by the
    Wilson lower bound `z` standard errors down, so that a small validation set cannot pass by luck.

    `table` and `policy` are each part's answers on its own (confidence NaN where it cannot answer at
    any threshold). Every table threshold worth trying is tried; for each, the policy's is the lowest
    at which the combined precision still meets the target. (inf: that part never answers.)
    """
    best = (0, np.inf, np.inf)
    t_conf = np.where(np.isnan(table.confidence), -np.inf, table.confidence)
    for t in np.append(np.unique(t_conf[np.isfinite(t_conf)]), np.inf):
        by_table = t_conf >= t
        right, answered = int((table.action[by_table] == truth[by_table]).sum()), int(by_table.sum())
        if answered and wilson_lower(right / answered, answered, z) < target:
            continue
        left = ~by_table & ~np.isnan(policy.confidence)
        conf = policy.confidence[left]
        order = np.argsort(-conf, kind="stable")
        hits = np.cumsum(policy.action[left][order] == truth[left][order])
        m = np.arange(1, len(order) + 1)
        ok = wilson_lower((right + hits) / (answered + m), answered + m, z) >= target
        ok &= np.append(conf[order][1:] < conf[order][:-1], True)  # cut only between distinct confidences
        cut = int(np.flatnonzero(ok)[-1]) if ok.any() else -1
        p = float(conf[order][cut]) if cut >= 0 else np.inf
        covered = answered + cut + 1
        if covered > best[0]:
            best = (covered, float(t), p)
    return best[1], best[2]


def metrics(answers: Answers, truth: np.ndarray, actions: list[str]) -> dict:
    """Coverage, precision, expected calibration error and per-action figures of `answers` against `truth`."""
    answered = ~np.isnan(answers.confidence)
    n, m = len(truth), int(answered.sum())
    correct = answers.action[answered] == truth[answered]
    out = {"decisions": n, "answered": m, "coverage": m / n if n else 0.0,
           "precision": float(correct.mean()) if m else None, "calibration_error": None, "per_action": {}}
    if m:
        out["calibration_error"] = _ece(correct, answers.confidence[answered])
        labels = list(range(len(actions)))
        p, r, _, _ = precision_recall_fscore_support(truth[answered], answers.action[answered], labels=labels,
                                                           zero_division=0)
        decided = np.bincount(truth, minlength=len(actions))
        out["per_action"] = {actions[i]: {"precision": float(p[i]), "recall": float(r[i]),
                                          "answered": int((answers.action[answered] == i).sum()),
                                          "decisions": int(decided[i])} for i in labels}
    return out


def _ece(correct: np.ndarray, confidence: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the support-weighted gap between confidence and accuracy per bin."""
    confidence = np.clip(confidence, 0, 1)
    if correct.all() or not correct.any():
        return float(abs(correct.mean() - confidence.mean()))
    accuracy, mean_conf = calibration_curve(correct, confidence, n_bins=bins, strategy="uniform")
    counts = np.histogram(confidence, bins=np.linspace(0, 1, bins + 1))[0]
    counts = counts[counts > 0]
    return float(np.sum(counts / counts.sum() * np.abs(accuracy - mean_conf)))
