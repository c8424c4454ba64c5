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
layers with ReLU between them, and the calibration of its confidence; in a continuous world also the
range of each action dimension, which its Gaussian head's means are in units of).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import pyarrow as pa

POLICY_KEYS = ("mean", "std", "w1", "b1", "w2", "b2", "w3", "b3", "scale", "distance", "shift", "low", "high")


@dataclass
class Answers:
    """System 1's answers on some states: action index, confidence (NaN where it abstains), and source."""

    action: np.ndarray
    """(n,) action indices, or in a continuous world (n, a) action vectors."""
    confidence: np.ndarray
    source: np.ndarray
    """'table', 'policy', or '' where it abstains."""
    situation: np.ndarray
    """The nearest situation of each state."""


def action_span(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The range of each action dimension, `low` to `high`, that distances between actions are measured in
    (a range of 0 counts as 1)."""
    return np.where(high > low, np.asarray(high, np.float64) - low, 1.0)


def action_distance(a: np.ndarray, b: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(n,) how far apart the rows of two (n, k) arrays of action vectors are: the root mean square of their
    differences, each dimension in units of its range (`action_span`). An answer within a bundle's
    `action_tolerance` of System 2's action is right."""
    return np.sqrt((((np.asarray(a, np.float64) - np.asarray(b, np.float64)) / action_span(low, high)) ** 2).mean(1))


def policy_head(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The policy network's outputs for the (n, d) latents `x`: a logit per action, or in a continuous world
    each dimension's mean (in units of its range) then each one's log standard deviation."""
    h = (np.asarray(x, np.float32) - weights["mean"]) / weights["std"]
    h = np.maximum(h @ weights["w1"] + weights["b1"], 0)
    h = np.maximum(h @ weights["w2"] + weights["b2"], 0)
    return (h @ weights["w3"] + weights["b3"]).astype(np.float64)


def policy_gaussian(weights: dict[str, np.ndarray], out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A continuous world's Gaussian head read in the action's own units: (mean, standard deviation), (n, a) each."""
    a, low, span = weights["low"].size, weights["low"], action_span(weights["low"], weights["high"])
    return (low + np.clip(out[:, :a], 0, 1) * span).astype(np.float32), np.exp(np.clip(out[:, a:], -7, 2)) * span


def policy_outputs(weights: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The policy's action for each of the (n, d) latents `x`, and how sure its network is of it (`top`): in a
    discrete world its highest logit's action and that logit; in a continuous world the mean of its Gaussian
    head and minus the mean of its log standard deviation (in units of the range)."""
    out = policy_head(weights, x)
    if weights["low"].size:  # continuous
        return policy_gaussian(weights, out)[0], -np.clip(out[:, weights["low"].size:], -7, 2).mean(1)
    action = out.argmax(1)
    return action, out[np.arange(len(action)), action]


def policy_answers(weights: dict[str, np.ndarray], x: np.ndarray, far: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The policy's action for each of the (n, d) latents `x` (`policy_outputs`) and its calibrated chance that
    the action is as good as System 2's choice there: sigmoid(scale * top + distance * far + shift), `far`
    being each state's distance to its situation in novelty radii (a network errs more far from its data,
    and the calibration learns how much)."""
    action, top = policy_outputs(weights, x)
    z = weights["scale"] * top + weights["distance"] * far + weights["shift"]
    return action, np.exp(-np.logaddexp(0, -z))  # the logistic function


def table_columns(table: pa.Table, actions: list[str]) -> dict[str, np.ndarray]:
    """The heuristic table's columns the rule needs, as arrays (the best action as its index in `actions`, or
    in a continuous world, whose `actions` are none, as an (k, a) matrix of vectors)."""
    position = {a: i for i, a in enumerate(actions)}
    best = (np.array([position[a] for a in table["best_action"].to_pylist()], np.int64) if actions
            else np.array(table["best_action"].to_pylist(), np.float32).reshape(table.num_rows, -1))
    best.setflags(write=False)  # a reflex's action vector is a row of it: a caller may not change the bundle
    return {"best": best,
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
    """(k,) the table's action per situation (its index), or in a continuous world (k, a) its vector."""
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
                                            list(self.best) if self.best.ndim > 1 else self.best.tolist(),
                                            self.confidence.tolist(), self.radius.tolist()))

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

    def decide_one(self, x: np.ndarray) -> tuple[Any, float, str, int] | None:
        """The answer for one latent state (a contiguous float32 vector): (action: an index, or a vector;
        confidence, source, situation), or None where System 1 abstains."""
        table_reach2, policy_reach2, best, confidence, radius = self._gates  # type: ignore[attr-defined]
        c, d2 = _nearest_one(self.index, x)
        if d2 <= table_reach2[c]:
            return best[c], confidence[c], "table", c
        answer = self._policy_one(x, c, d2)
        if answer is None or answer[1] < self.policy_threshold:
            return None
        return answer[0], answer[1], "policy", c

    def propose_one(self, x: np.ndarray) -> tuple[Any, float, int] | None:
        """The policy's answer for one latent state whatever its confidence (action, confidence, situation): a
        start for a planner where System 1 abstains; None beyond the policy's reach."""
        c, d2 = _nearest_one(self.index, x)
        answer = self._policy_one(x, c, d2)
        return None if answer is None else (*answer, c)

    def _policy_one(self, x: np.ndarray, c: int, d2: float) -> tuple[Any, float] | None:
        """The policy's (action, calibrated confidence) for `x`, at squared distance `d2` from its situation `c`;
        None beyond the policy's reach there."""
        _, policy_reach2, _, _, radius = self._gates  # type: ignore[attr-defined]
        if d2 > policy_reach2[c]:
            return None
        action, sure = policy_answers(self.policy, x[None], np.array([math.sqrt(max(d2, 0.0)) / radius[c]]))
        return (action[0] if action.ndim > 1 else int(action[0])), float(sure[0])


def _nearest_one(index: faiss.Index, x: np.ndarray) -> tuple[int, float]:
    """(situation, squared distance) of one state's nearest centroid, searched on the caller's thread alone.

    For a single query FAISS still starts a team of OpenMP threads (one per core). On a busy machine the
    team waits for threads the OS has not scheduled yet, and a 10 µs search takes milliseconds. The thread
    count is the calling thread's own OpenMP setting: set for the search, then put back.
    """
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        d2, ids = index.search(x[None], 1)
    finally:
        faiss.omp_set_num_threads(threads)
    return int(ids[0, 0]), float(d2[0, 0])
