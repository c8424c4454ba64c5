"""A night's decision states: the one part of its `Experience` too large to gather in one place at a fleet's scale
(1M steps of a 1,408-d latent: 5.6 GB).

The night touches them in two ways only: it takes a bounded sample of rows into memory (to fit the situations'
k-means, the PCA, the policy), and it maps a row-wise function over a set of rows (assigning each state to
its situation, System 1's answers on held-out steps). `States` holds them in this process; the Ray engine's
`dmn.sleep.distributed.States` keeps them on the cluster, in ranges of rows, and maps there.

    >>> cluster, distance = states.map(situations, train, index)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any, Callable

import faiss
import numpy as np

from dmn.bundle.decide import Answers, Rule, nearest

RowWise = Callable[..., tuple[np.ndarray, ...]]
"""A function of (rows of states, *args) to a tuple of arrays with one entry per row, each row's computed
from that row alone (so that any node may compute any block of rows)."""


class States:
    """(n, d) float32 latent states, row i for the night's labelled step i, held in this process."""

    mapped = 0.0
    """Seconds spent in `map` so far: the night's work that grows with its states, which the Ray engine spreads."""

    def __init__(self, x: np.ndarray, block: int):
        self.x, self.block = x, block

    def __len__(self) -> int:
        return len(self.x)

    @property
    def dim(self) -> int:
        return self.x.shape[1]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The states at `rows`, in that order, as one array: for samples, not for all of them."""
        return self.x[rows]

    def map(self, fn: RowWise, rows: np.ndarray, *args: Any) -> tuple[np.ndarray, ...]:
        """`fn(states at rows, *args)`, computed a block of rows at a time (`apply`)."""
        started = time.perf_counter()
        try:
            return self._map(fn, rows, args)
        finally:
            self.mapped += time.perf_counter() - started

    def _map(self, fn: RowWise, rows: np.ndarray, args: tuple[Any, ...]) -> tuple[np.ndarray, ...]:
        return apply(self.x, rows, fn, args, self.block)


def apply(x: np.ndarray, rows: np.ndarray, fn: RowWise, args: tuple[Any, ...], block: int, first: int = 0
          ) -> tuple[np.ndarray, ...]:
    """`fn(x[rows], *args)`, computed a block at a time: the `rows` of `x` (whose row 0 is the night's row
    `first`) grouped by the block of `block` of the night's rows they are in (`[consolidate] block_rows`),
    in their order within it; a copy of them all would double the states' memory.

    Every engine groups a night's rows alike, and so computes the same figures to the bit: what a matrix
    product rounds to depends on how many rows it is given (BLAS picks its kernel by shape)."""
    if not len(rows):
        return fn(x[rows], *args)
    picks, back = groups((rows + first) // block)
    return joined([fn(x[rows[p]], *args) for p in picks], back)


def groups(keys: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The positions of `keys` grouped by key (in their order within a group), and the order that puts what
    the groups give, joined (`joined`), back in the order of `keys`."""
    order = np.argsort(keys, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(keys[order])) + 1), np.argsort(order)


def joined(parts: list[tuple[np.ndarray, ...]], back: np.ndarray) -> tuple[np.ndarray, ...]:
    """The groups' results (tuples of arrays, a row each) joined, column by column, in the order `back`."""
    return tuple(np.concatenate(column)[back] for column in zip(*parts))


def draw(n: int, most: int, seed: int) -> np.ndarray:
    """At most `most` of the positions 0..n-1, drawn by `seed` without replacement, in order (all of them when
    there are no more): the bounded samples a night fits on, the same on every engine."""
    if n <= most:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, most, replace=False))


# -- row-wise functions the night maps ---------------------------------------------------------------------------

def situations(x: np.ndarray, index: faiss.Index) -> tuple[np.ndarray, np.ndarray]:
    """Each state's nearest centroid of `index` and its distance (`nearest`)."""
    return nearest(index, x)


def decisions(x: np.ndarray, rule: Rule) -> tuple[np.ndarray, ...]:
    """System 1's answers by `rule`, as `Answers`' fields (`answers` puts them together again)."""
    a = rule.decide(x)
    return a.action, a.confidence, a.source, a.situation


def answers(states: States, rows: np.ndarray, rule: Rule) -> Answers:
    """System 1's answers by `rule` on the states at `rows`."""
    return Answers(*states.map(decisions, rows, rule))
