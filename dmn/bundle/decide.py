"""System 1's decision rule, written once: the night evaluates it, the client serves it.

For each situation (a cluster of decision states) the rule is prepared once, when a bundle is loaded or
a night tries thresholds: the table may answer within `table_reach2` of the situation's centre (its core
radius squared, or -1 where the table may not answer at all: too little support, too little confidence,
a demoted situation); the policy network may answer within `policy_reach2` (`policy_reach` novelty radii,
squared; -1 where demoted) when its calibrated probability reaches `policy_threshold`. A lookup
is then one nearest-centroid search and two comparisons, and the policy's network where it is asked.

    >>> rule = Rule.prepare(index, table_columns(table, actions), policy, thresholds, 3.0, 2.0)  # doctest: +SKIP
    >>> answers = rule.decide(states)                                                          # doctest: +SKIP
    >>> rule.decide_one(states[0])                     # (action, confidence, source, situation) or None  # doctest: +SKIP

Numpy and FAISS only: the policy's weights are plain arrays (input normalisation, three linear
layers with ReLU between them, and the calibration of its top logit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow as pa

POLICY_KEYS = ("mean", "std", "w1", "b1", "w2", "b2", "w3", "b3", "scale", "distance", "shift")


@dataclass
class Answers:
    """System 1's answers on some states: action index, confidence (NaN where it abstains), and source."""

    action: np.ndarray
    confidence: np.ndarray
    source: np.ndarray
    """'table', 'policy', or '' where it abstains."""
    situation: np.ndarray
    """The nearest situation of each state."""


def policy_answers(weights: dict[str, np.ndarray], x: np.ndarray, far: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The policy's action for each of the (n, d) latents `x` (its highest logit) and its calibrated chance
    that the action is as good as System 2's choice there: sigmoid(scale * logit + distance * far + shift),
    `far` being each state's distance to its situation in novelty radii (a network errs more far from its
    data, and the calibration learns how much)."""
    h = (np.asarray(x, np.float32) - weights["mean"]) / weights["std"]
    h = np.maximum(h @ weights["w1"] + weights["b1"], 0)
    h = np.maximum(h @ weights["w2"] + weights["b2"], 0)
    logits = h @ weights["w3"] + weights["b3"]
    action = logits.argmax(1)
    top = logits[np.arange(len(action)), action].astype(np.float64)
    z = weights["scale"] * top + weights["distance"] * far + weights["shift"]
    return action, np.exp(-np.logaddexp(0, -z))  # the logistic function


def table_columns(table: pa.Table, actions: list[str]) -> dict[str, np.ndarray]:
    """The heuristic table's columns the rule needs, as arrays (the best action as its index in `actions`)."""
    position = {a: i for i, a in enumerate(actions)}
    return {"best": np.array([position[a] for a in table["best_action"].to_pylist()], np.int64),
            "confidence": table["confidence"].to_numpy(), "radius": table["radius"].to_numpy(),
            "core": table["core"].to_numpy(),
            "support": table["support"].to_numpy(),
            "demoted": table["demoted"].to_numpy(zero_copy_only=False).astype(bool)}


def nearest(index: faiss.Index, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(situation, Euclidean distance) of each row's nearest centroid."""
    d2, ids = index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    return ids[:, 0], np.sqrt(np.maximum(d2[:, 0], 0))


def threshold(value: float | None) -> float:
    """A manifest's threshold as the rule reads it: None (that part never answers) is infinity."""
    return math.inf if value is None else float(value)


@dataclass(frozen=True)
class Rule:
    """The decision rule of one bundle (or of one trial of thresholds), prepared per situation.

    `decide` answers a batch, `decide_one` one state (the agent's hot path, in plain Python on the same
    prepared gates: a few microseconds beside the search); the suite checks that they agree everywhere.
    """

    index: faiss.Index
    """The situations' search index (raw latents in, squared distances out)."""
    best: np.ndarray
    """(k,) the table's action per situation."""
    confidence: np.ndarray
    """(k,) the table's confidence per situation."""
    table_reach2: np.ndarray
    """(k,) squared distance within which the table answers (its core); -1 where it may not."""
    policy_reach2: np.ndarray
    """(k,) squared distance within which the policy may answer; -1 where the situation is demoted."""
    radius: np.ndarray
    """(k,) the novelty radius, the unit of a state's distance in the policy's confidence."""
    policy: dict[str, np.ndarray]
    policy_threshold: float

    @classmethod
    def prepare(cls, index: faiss.Index, table: dict[str, np.ndarray], policy: dict[str, np.ndarray],
                thresholds: dict[str, float | None], min_support: float, policy_reach: float) -> Rule:
        """The rule from a bundle's parts: `table` as `table_columns` gives it, `thresholds` for the table's
        confidence and the policy's probability (None or inf: that part never answers)."""
        trusted = ~table["demoted"]
        table_ok = (trusted & (table["support"] >= min_support)
                    & (table["confidence"] >= threshold(thresholds["table"])))
        radius = np.maximum(table["radius"].astype(np.float64), 1e-12)
        return cls(index, table["best"], table["confidence"], np.where(table_ok, table["core"].astype(np.float64) ** 2, -1.0),
                   np.where(trusted, (policy_reach * radius) ** 2, -1.0), radius, policy, threshold(thresholds["policy"]))

    def __post_init__(self) -> None:  # the gates as Python lists, for decide_one
        object.__setattr__(self, "_gates", (self.table_reach2.tolist(), self.policy_reach2.tolist(),
                                            self.best.tolist(), self.confidence.tolist(), self.radius.tolist()))

    def decide(self, x: np.ndarray) -> Answers:
        """System 1's answers for (n, d) latent states: the table first, then the policy, else abstain."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        d2, ids = self.index.search(x, 1)
        situation, d2 = ids[:, 0], d2[:, 0]
        by_table = d2 <= self.table_reach2[situation]
        action = self.best[situation]
        confidence = np.where(by_table, self.confidence[situation], np.nan)
        asks = ~by_table & (d2 <= self.policy_reach2[situation])  # the network runs only where it may answer
        if asks.any():
            far = np.sqrt(np.maximum(d2[asks], 0)) / self.radius[situation[asks]]
            action[asks], sure = policy_answers(self.policy, x[asks], far)
            confidence[asks] = np.where(sure >= self.policy_threshold, sure, np.nan)
        source = np.where(by_table, "table", np.where(asks & ~np.isnan(confidence), "policy", ""))
        return Answers(action, confidence, source, situation)

    def decide_one(self, x: np.ndarray) -> tuple[int, float, str, int] | None:
        """The answer for one latent state (a contiguous float32 vector): (action, confidence, source,
        situation), or None where System 1 abstains."""
        table_reach2, policy_reach2, best, confidence, radius = self._gates  # type: ignore[attr-defined]
        d2, ids = self.index.search(x[None], 1)
        c, d2 = int(ids[0, 0]), float(d2[0, 0])
        if d2 <= table_reach2[c]:
            return best[c], confidence[c], "table", c
        if d2 > policy_reach2[c]:
            return None
        action, sure = policy_answers(self.policy, x[None], np.array([math.sqrt(max(d2, 0.0)) / radius[c]]))
        return (int(action[0]), float(sure[0]), "policy", c) if sure[0] >= self.policy_threshold else None
