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
from sklearn.metrics import precision_recall_curve, precision_recall_fscore_support
from sklearn.model_selection import train_test_split

from dmn.config import ConsolidateSettings
from dmn.experience import Experience
from dmn.reflex import Answers


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


def threshold(correct: np.ndarray, confidence: np.ndarray, target: float) -> float:
    """The lowest confidence at which answering reaches `target` precision (inf: never answer)."""
    answered = ~np.isnan(confidence)
    if not answered.any() or correct[answered].all():
        return float(np.nanmin(confidence)) if answered.any() else float("inf")
    if not correct[answered].any():
        return float("inf")
    precision, _, thresholds = precision_recall_curve(correct[answered], confidence[answered])
    ok = np.flatnonzero(precision[:-1] >= target)
    return float(thresholds[ok[0]]) if len(ok) else float("inf")


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
