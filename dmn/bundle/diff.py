"""What changed between two bundles of a world, situation by situation: the trail a night leaves.

    >>> change = compare(Home.resolve(), "CartPole-v1")  # doctest: +SKIP
    >>> change.counts()                                  # doctest: +SKIP
    {'same': 41, 'action': 2, 'added': 3, 'gone': 1}

A night clusters afresh, so situations are renumbered every time; they are matched by their centroids. A
situation of the newer bundle continues the older one whose centroid is nearest to its own, when its centroid
lies within that one's novelty radius (`radius`: most of its members were nearer); otherwise it was added. An
older situation that no newer one continues is gone. A continued situation's `change` is the first that holds
of: its action changed (in a continuous world: moved beyond the bundle's `action_tolerance`), it was demoted,
it was restored, its confidence moved by `moved` or more, or it is the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import pyarrow as pa

from dmn.bundle import publish
from dmn.bundle.decide import action_distance
from dmn.bundle.load import Bundle, load
from dmn.errors import DmnError
from dmn.home import Home

CHANGES = ("added", "gone", "action", "demoted", "restored", "confidence", "same")
"""What can have happened to a situation, in the order `change` tests them."""
SCHEMA = pa.schema([
    ("situation", pa.int32()), ("previous", pa.int32()), ("distance", pa.float64()), ("change", pa.string()),
    ("action", pa.string()), ("previous_action", pa.string()), ("confidence", pa.float64()),
    ("previous_confidence", pa.float64()), ("support", pa.float64()), ("previous_support", pa.float64()),
    ("demoted", pa.bool_()), ("previous_demoted", pa.bool_())])
"""A row per situation of either bundle (`BundleDiff.situations`)."""


@dataclass
class BundleDiff:
    world: str
    old: str | None
    """The older bundle's version (None: there was none, and every situation is added)."""
    new: str
    situations: pa.Table
    """One row per situation of either bundle (`SCHEMA`): `situation` is its number in the newer bundle,
    `previous` in the older (NULL where it has none), `distance` between their centroids."""
    thresholds: dict[str, tuple[float | None, float | None]]
    """The table's and the policy's confidence thresholds, (older, newer)."""
    metrics: dict[str, tuple[float | None, float | None]]
    """Held-out coverage and precision (and exact precision), each as its night measured it, (older, newer)."""
    note: str = ""
    """Why the situations could not be matched, where they could not (another encoder or latent size)."""

    def counts(self) -> dict[str, int]:
        """How many situations had each change, in `CHANGES` order (changes that did not happen left out)."""
        seen = self.situations["change"].to_pylist()
        return {c: seen.count(c) for c in CHANGES if c in seen}

    def to_dict(self) -> dict[str, Any]:
        return {"world": self.world, "old": self.old, "new": self.new, "counts": self.counts(),
                "thresholds": self.thresholds, "metrics": self.metrics, "note": self.note,
                "situations": self.situations.to_pylist()}


def compare(home: Home, world: str, old: str | None = None, new: str | None = None, moved: float = 0.05) -> BundleDiff:
    """The change from bundle `old` to bundle `new` of `world` (default: the current one, and the kept one before it)."""
    new = new or publish.current(home, world)
    if new is None:
        raise DmnError(f"no bundle published for world {world!r}")
    if old is None:
        before = [v for v in publish.versions(home, world) if v < new]
        if not before:
            raise DmnError(f"{world}: {new} is the oldest bundle kept, there is none before it to compare with")
        old = before[-1]
    return diff(load(home, world, old), load(home, world, new), moved)


def diff(old: Bundle | None, new: Bundle, moved: float = 0.05) -> BundleDiff:
    """The change from bundle `old` (None: no bundle) to bundle `new`, of one world."""
    rows: list[dict[str, Any]] = []
    note = ""
    if old is not None and (old.manifest["encoder"], old.manifest["dim"]) != (new.manifest["encoder"], new.manifest["dim"]):
        note = (f"the latents changed (encoder {old.manifest['encoder']} d={old.manifest['dim']} -> "
                f"{new.manifest['encoder']} d={new.manifest['dim']}): no situation continues")
    k_new = new.index.ntotal
    if old is None or note:
        previous, distance = np.full(k_new, -1), np.full(k_new, np.nan)
    else:
        search = faiss.IndexFlatL2(old.manifest["dim"])
        search.add(old.index.reconstruct_n(0, old.index.ntotal))  # exact: a PCA search keeps them whole to re-rank
        d2, ids = search.search(new.index.reconstruct_n(0, k_new), 1)
        distance, previous = np.sqrt(np.maximum(d2[:, 0], 0)), ids[:, 0]
        previous[distance > old.table["radius"].to_numpy()[previous]] = -1
    for j in range(k_new):
        i = int(previous[j])
        rows.append(_row(new, j, old if i >= 0 else None, i, float(distance[j]), moved))
    continued = set(previous[previous >= 0].tolist())
    for i in range(old.index.ntotal if old is not None else 0):
        if i not in continued:
            rows.append(_row(None, -1, old, i, None, moved))
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    figures = lambda b, key: None if b is None else b.manifest["metrics"]["combined"].get(key)  # noqa: E731
    return BundleDiff(
        world=new.manifest["world"], old=None if old is None else old.version, new=new.version, situations=table,
        thresholds={part: (None if old is None else old.manifest["thresholds"][part], new.manifest["thresholds"][part])
                    for part in ("table", "policy")},
        metrics={key: (figures(old, key), figures(new, key)) for key in ("coverage", "precision", "exact_precision")},
        note=note)


def _row(new: Bundle | None, j: int, old: Bundle | None, i: int, distance: float | None, moved: float) -> dict[str, Any]:
    """One situation's row: `j` of `new`, continuing `i` of `old` (None where it has no such side)."""
    side = lambda b, s, key: None if b is None else b.table[key][s].as_py()  # noqa: E731
    row = {"situation": None if new is None else j, "previous": None if old is None else i,
           "distance": distance if new is not None and old is not None else None,
           "action": None if new is None else _action(new, j), "previous_action": None if old is None else _action(old, i)}
    for key in ("confidence", "support", "demoted"):
        row[key], row[f"previous_{key}"] = side(new, j, key), side(old, i, key)
    if new is None or old is None:
        row["change"] = "added" if old is None else "gone"
    elif _moved_action(old, i, new, j):
        row["change"] = "action"
    elif row["demoted"] != row["previous_demoted"]:
        row["change"] = "demoted" if row["demoted"] else "restored"
    elif abs((row["confidence"] or 0) - (row["previous_confidence"] or 0)) >= moved:
        row["change"] = "confidence"
    else:
        row["change"] = "same"
    return row


def _action(bundle: Bundle, situation: int) -> str:
    return action_text(bundle.table["best_action"][situation].as_py())


def action_text(value: str | list[float] | None) -> str | None:
    """An action as text, so that one column holds a discrete world's or a continuous one's: a label as it
    is, a vector as JSON (4 digits)."""
    return value if value is None or isinstance(value, str) else json.dumps([round(v, 4) for v in value])


def _moved_action(old: Bundle, i: int, new: Bundle, j: int) -> bool:
    a, b = old.table["best_action"][i].as_py(), new.table["best_action"][j].as_py()
    if not new.action_dim:
        return a != b
    low, high = np.asarray(new.manifest["action_low"]), np.asarray(new.manifest["action_high"])
    return bool(action_distance(np.array([a]), np.array([b]), low, high)[0] > new.manifest["action_tolerance"])
