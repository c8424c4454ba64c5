"""FAISS k-means: decision states into situations, imagined consequences into outcome types.

A situation index is one FAISS index over the centroids that takes raw latents and returns exact
distances, so whoever searches it gets what the night computed. For speed at large d it can search
in a few PCA dimensions (`IndexPreTransform`) and re-rank the nearest candidates by their exact
distance (`IndexRefineFlat`): novelty is still judged in the full space.
"""

from __future__ import annotations

import faiss
import numpy as np

from dmn.bundle.decide import nearest

PCA_SAMPLE = 50_000
"""Rows the PCA is fitted on: plenty for a covariance in a few hundred dimensions."""
REFINE_CANDIDATES = 8
"""Nearest centroids in PCA space whose exact distances are compared."""


def situation_count(n: int) -> int:
    """A k for n decision states: about sqrt(n/2), so that a situation has ~sqrt(2n) members to vote."""
    return int(np.clip(round(np.sqrt(n / 2)), 1, 16384))


def kmeans(x: np.ndarray, k: int, weights: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """(k, d) centroids of the rows of `x` (weighted); k is capped at the number of rows.

    Seeded by k-means++ (scikit-learn, on a sample) rather than FAISS's random pick, which often puts
    two seeds in one situation and none in another; FAISS then runs the Lloyd iterations.
    """
    # Imported here: a second's import, paid only by the processes that cluster.
    from sklearn.cluster import kmeans_plusplus

    x = np.ascontiguousarray(x, dtype=np.float32)
    k = max(1, min(k, len(x)))
    rng = np.random.default_rng(seed)
    sample = x[rng.choice(len(x), min(len(x), max(20 * k, 2000)), replace=False)]
    seeds, _ = kmeans_plusplus(sample.astype(np.float64), k, random_state=seed)  # float32 is upcast piece by piece: 3x slower
    model = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed, min_points_per_centroid=1, max_points_per_centroid=256,
                         verbose=False)
    model.train(x, weights=None if weights is None else np.ascontiguousarray(weights, dtype=np.float32),
                init_centroids=np.ascontiguousarray(seeds, dtype=np.float32))
    return model.centroids


def outcome_types(pieces: list[np.ndarray], dim: int, k: int, seed: int = 0) -> tuple[faiss.IndexFlatL2, np.ndarray]:
    """Cluster imagined consequences into k outcome types: (the index over their centroids, each row's
    type, -1 where nothing was imagined).

    `pieces` are consecutive (rows, d) blocks of one matrix, NaN rows where nothing was imagined: the
    k-means is fitted on a sample of up to 256 rows a type (as many as FAISS would use), and the rows are
    then searched piece by piece, never copied into one matrix.
    """
    imagined = np.concatenate([~np.isnan(p[:, 0]) for p in pieces]) if pieces and dim else np.zeros(0, bool)
    index, types = faiss.IndexFlatL2(dim), np.full(sum(len(p) for p in pieces), -1)
    if not imagined.any():
        return index, types
    rows = np.flatnonzero(imagined)
    sample = np.sort(np.random.default_rng(seed).choice(rows, min(len(rows), 256 * k), replace=False))
    starts = np.cumsum([0] + [len(p) for p in pieces])
    piece = np.searchsorted(starts, sample, side="right") - 1
    index.add(kmeans(np.concatenate([pieces[i][sample[piece == i] - starts[i]] for i in np.unique(piece)]), k,
                     None, seed))
    for p, start, wanted in zip(pieces, starts, np.split(imagined, starts[1:-1])):
        if wanted.any():
            types[start: start + len(p)][wanted] = nearest(index, p if wanted.all() else p[wanted])[0]
    return index, types


def situation_index(states: np.ndarray, k: int, weights: np.ndarray, pca_dims: int, seed: int) -> faiss.Index:
    """Cluster `states` into k situations; returns the search index over their centroids."""
    return centroid_index(kmeans(states, k, weights, seed), states, pca_dims, seed)


def centroid_index(centroids: np.ndarray, states: np.ndarray, pca_dims: int, seed: int = 0) -> faiss.Index:
    """The search index over `centroids`: exact, or a PCA (fitted on `states`) search re-ranked exactly."""
    d = centroids.shape[1]
    if not pca_dims or pca_dims >= d or len(states) <= pca_dims:
        index = faiss.IndexFlatL2(d)
        index.add(np.ascontiguousarray(centroids, dtype=np.float32))
        return index
    pca = faiss.PCAMatrix(d, pca_dims)
    sample = np.random.default_rng(seed).choice(len(states), min(len(states), PCA_SAMPLE), replace=False)
    pca.train(np.ascontiguousarray(states[np.sort(sample)], dtype=np.float32))
    index = faiss.IndexRefineFlat(faiss.IndexPreTransform(pca, faiss.IndexFlatL2(pca_dims)))
    index.k_factor = REFINE_CANDIDATES
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    return index  # FAISS's Python layer keeps the parts alive
