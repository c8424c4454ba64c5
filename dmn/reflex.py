"""System 1's answer from a bundle's parts, in numpy and FAISS only.

The night uses these functions to choose thresholds and report figures, and the client uses the same
ones to serve, so what was measured is what runs. The policy network's weights are plain arrays
(input normalisation, three linear layers with ReLU between them, a calibrated temperature).
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow as pa

POLICY_KEYS = ("mean", "std", "w1", "b1", "w2", "b2", "w3", "b3", "temperature")


@dataclass
class Answers:
    """System 1's answers on some states: action index, confidence (NaN where it abstains), and source."""

    action: np.ndarray
    confidence: np.ndarray
    source: np.ndarray
    """'table', 'policy', or '' where it abstains."""
    situation: np.ndarray
    """The nearest situation of each state."""


def policy_probabilities(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """(n, actions) calibrated action probabilities of the (n, d) latents `x`."""
    h = (np.asarray(x, np.float32) - weights["mean"]) / weights["std"]
    h = np.maximum(h @ weights["w1"] + weights["b1"], 0)
    h = np.maximum(h @ weights["w2"] + weights["b2"], 0)
    logits = (h @ weights["w3"] + weights["b3"]) / weights["temperature"]
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def table_columns(table: pa.Table, actions: list[str]) -> dict[str, np.ndarray]:
    """The heuristic table's columns a lookup needs, as arrays (the best action as its index in `actions`)."""
    position = {a: i for i, a in enumerate(actions)}
    return {"best": np.array([position[a] for a in table["best_action"].to_pylist()], np.int64),
            "confidence": table["confidence"].to_numpy(), "radius": table["radius"].to_numpy(),
            "support": table["support"].to_numpy(),
            "demoted": table["demoted"].to_numpy(zero_copy_only=False).astype(bool)}


def nearest(index: faiss.Index, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(situation, Euclidean distance) of each row's nearest centroid."""
    d2, ids = index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    return ids[:, 0], np.sqrt(np.maximum(d2[:, 0], 0))


def answer(x: np.ndarray, index: faiss.Index, table: dict[str, np.ndarray], weights: dict[str, np.ndarray],
           thresholds: dict[str, float], min_support: float, policy_reach: float) -> Answers:
    """Table first (a known situation, within its radius, with enough support and confidence), then the
    policy (confident enough, and within `policy_reach` radii of a known situation: a network is
    confidently wrong far from its data), else abstain; a demoted situation always abstains. `table`
    holds the columns of `table_columns`."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    situation, distance = nearest(index, x)
    radius = table["radius"][situation]
    table_conf = table["confidence"][situation]
    trusted = ~table["demoted"][situation]
    from_table = (trusted & (distance <= radius) & (table["support"][situation] >= min_support)
                  & (table_conf >= thresholds["table"]))
    action = table["best"][situation]
    confidence = np.where(from_table, table_conf, np.nan)
    reach = trusted & ~from_table & (distance <= policy_reach * radius)  # the policy runs only where it may answer
    if reach.any():
        probs = policy_probabilities(weights, x[reach])
        action[reach], sure = probs.argmax(1), probs.max(1)
        confidence[reach] = np.where(sure >= thresholds["policy"], sure, np.nan)
    source = np.where(from_table, "table", np.where(reach & ~np.isnan(confidence), "policy", ""))
    return Answers(action, confidence, source, situation)
