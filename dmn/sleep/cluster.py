"""FAISS k-means: decision states into situations, imagined consequences into outcome types.

A situation index is one FAISS index over the centroids that takes raw latents and returns exact
distances, so whoever searches it gets what the night computed. For speed at large d it can search
in a few PCA dimensions (`IndexPreTransform`) and re-rank the nearest candidates by their exact
distance (`IndexRefineFlat`): novelty is still judged in the full space.
"""

from __future__ import annotations

import faiss
import numpy as np

from dmn.errors import DmnError
from dmn.sleep.experience import Experience, Window, in_order, matrix
from dmn.sleep.states import States, draw

POINTS_PER_CENTROID = 256
"""Rows a k-means is fitted on, at most, per centroid: FAISS's own bound, drawn by the night, the same on
every engine, so that only those rows are taken into memory."""
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
    model = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed, min_points_per_centroid=1,
                         max_points_per_centroid=POINTS_PER_CENTROID,
                         verbose=False)
    model.train(x, weights=None if weights is None else np.ascontiguousarray(weights, dtype=np.float32),
                init_centroids=np.ascontiguousarray(seeds, dtype=np.float32))
    return model.centroids


def outcome_types(window: Window, exp: Experience, k: int, seed: int = 0) -> tuple[faiss.IndexFlatL2, np.ndarray]:
    """Cluster the imagined consequences of `exp`'s simulations into k outcome types: (the index over their
    centroids, each simulation's type, -1 where nothing was imagined).

    The k-means is fitted on a sample of about `POINTS_PER_CENTROID` consequences a type, drawn by
    a hash of each simulation (`Window.sample`); then every consequence is typed as it is read again, a batch
    at a time (`Window.types`): a night never holds them all.
    """
    index, types = faiss.IndexFlatL2(exp.dim), np.full(len(exp.sim_step), -1)
    imagined = np.flatnonzero(exp.sim_imagined)
    if not len(imagined):
        return index, types
    sample = in_order(window.sample(min(1.0, POINTS_PER_CENTROID * k / len(imagined)), seed))
    index.add(kmeans(matrix(sample["predicted"], exp.dim), k, None, seed))
    typed = in_order(window.types(index))
    if len(typed) != len(imagined):
        raise DmnError(f"the lake changed while the night read it: {len(typed)} imagined consequences on a second "
                       f"read, {len(imagined)} on the first")
    types[imagined] = typed["type"].to_numpy()
    return index, types


def situation_index(states: States, rows: np.ndarray, k: int, weights: np.ndarray, pca_dims: int, seed: int
                    ) -> faiss.Index:
    """Cluster the `states` at `rows` (weighted by `weights`, one per state) into k situations; returns the
    search index over their centroids. Only the samples they are fitted on are taken into memory: at most
    `POINTS_PER_CENTROID` rows a situation for the k-means, `PCA_SAMPLE` for the PCA."""
    fit = rows[draw(len(rows), POINTS_PER_CENTROID * k, seed)]
    centroids = kmeans(states.take(fit), k, weights[fit], seed)
    return centroid_index(centroids, states.take(rows[draw(len(rows), PCA_SAMPLE, seed)]), pca_dims)


def centroid_index(centroids: np.ndarray, sample: np.ndarray, pca_dims: int) -> faiss.Index:
    """The search index over `centroids`: exact, or a PCA (fitted on the states `sample`) search re-ranked
    exactly."""
    d = centroids.shape[1]
    if not pca_dims or pca_dims >= d or len(sample) <= pca_dims:
        index = faiss.IndexFlatL2(d)
        index.add(np.ascontiguousarray(centroids, dtype=np.float32))
        return index
    pca = faiss.PCAMatrix(d, pca_dims)
    pca.train(np.ascontiguousarray(sample, dtype=np.float32))
    index = faiss.IndexRefineFlat(faiss.IndexPreTransform(pca, faiss.IndexFlatL2(pca_dims)))
    index.k_factor = REFINE_CANDIDATES
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    return index  # FAISS's Python layer keeps the parts alive
