"""FAISS k-means: decision states into situations, imagined consequences into outcome types.

A situation index is one FAISS index over the centroids, with the optional PCA folded in
(`IndexPreTransform`), so whoever searches it passes raw latents and gets the same distances the
night computed.
"""

from __future__ import annotations

import faiss
import numpy as np
from sklearn.cluster import kmeans_plusplus


def situation_count(n: int) -> int:
    """A k for n decision states: about sqrt(n/2), so that a situation has ~sqrt(2n) members to vote."""
    return int(np.clip(round(np.sqrt(n / 2)), 1, 16384))


def kmeans(x: np.ndarray, k: int, weights: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """(k, d) centroids of the rows of `x` (weighted); k is capped at the number of rows.

    Seeded by k-means++ (scikit-learn, on a sample) rather than FAISS's random pick, which often puts
    two seeds in one situation and none in another; FAISS then runs the Lloyd iterations.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    k = max(1, min(k, len(x)))
    rng = np.random.default_rng(seed)
    sample = x[rng.choice(len(x), min(len(x), max(20 * k, 2000)), replace=False)]
    seeds, _ = kmeans_plusplus(sample, k, random_state=seed)
    model = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed, min_points_per_centroid=1, max_points_per_centroid=256,
                         verbose=False)
    model.train(x, weights=None if weights is None else np.ascontiguousarray(weights, dtype=np.float32),
                init_centroids=np.ascontiguousarray(seeds, dtype=np.float32))
    return model.centroids


def situation_index(states: np.ndarray, k: int, weights: np.ndarray, pca_dims: int, seed: int) -> faiss.Index:
    """Cluster `states` into k situations; returns the search index over their centroids (PCA inside)."""
    transform = None
    if pca_dims and pca_dims < states.shape[1]:
        states = np.ascontiguousarray(states, dtype=np.float32)
        transform = faiss.PCAMatrix(states.shape[1], pca_dims)
        transform.train(states)
        states = transform.apply(states)
    flat = faiss.IndexFlatL2(states.shape[1])
    flat.add(kmeans(states, k, weights, seed))
    if transform is None:
        return flat
    return faiss.IndexPreTransform(transform, flat)  # FAISS's Python layer keeps both parts alive

