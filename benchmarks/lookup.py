"""System 1's lookup latency against the raw FAISS search it wraps, idle and on a busy machine, and against System 2.

    python benchmarks/lookup.py                       # 1,024 / 4,096 / 16,384 situations at d=768
    python benchmarks/lookup.py --clusters 4096 --queries 2000
    python benchmarks/lookup.py --threads 16          # FAISS's OpenMP team as on a 16-core machine

For each size, a bundle is published in a temporary home with the night's own index construction
(`dmn.sleep.cluster.centroid_index`, the default `pca_dims`) over synthetic situations: centroids on a
32-dimensional manifold in 768-d, as an encoder's latents are, with a table and a policy network of
the night's default width. Then, in the same run:

- `Reflexes.lookup` (batch 1), in the caller's default thread settings (as an agent calls it, with no
  thread limits), and `index.search` on the same queries, interleaved query by query, the raw search at
  its fastest (one OpenMP thread): p50 and p99 latency, and what the lookup adds;
- the same lookups while one CPU-bound process per core runs beside them: p50 and p99 against idle;
- `Reflexes.lookup_batch` and `index.search` on batches of 1,024: states per second;
- the reference world's System 2 decision (the default planner on a world model of the default size;
  its cost does not depend on the weights), so the speed-up is in the same units.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dmn import Reflexes
from dmn.bundle import publish
from dmn.bundle.load import load
from dmn.config import ConsolidateSettings
from dmn.home import Home
from dmn.sleep.cluster import PCA_SAMPLE, centroid_index
from dmn.sleep.states import draw

DIM, ACTIONS, MANIFOLD = 768, 4, 32


def bundle(home: Home, k: int, rng: np.random.Generator) -> np.ndarray:
    """Publish a bundle of k situations; returns queries near them."""
    s = ConsolidateSettings()
    basis = rng.standard_normal((MANIFOLD, DIM)).astype(np.float32)
    centroids = (rng.standard_normal((k, MANIFOLD)).astype(np.float32) @ basis)
    noise = 0.05 * float(np.linalg.norm(centroids, axis=1).mean()) / np.sqrt(DIM)
    states = centroids[rng.integers(k, size=20 * k)] + noise * rng.standard_normal((20 * k, DIM)).astype(np.float32)
    index = centroid_index(centroids, states[draw(len(states), PCA_SAMPLE, 0)], s.pca_dims)  # as a night fits it
    actions = [str(a) for a in range(ACTIONS)]
    table = pa.table({
        "cluster": pa.array(np.arange(k), pa.int32()), "support": np.full(k, 20.0),
        "best_action": pa.array([actions[a] for a in rng.integers(ACTIONS, size=k)]),
        "confidence": rng.uniform(0.9, 1.0, k), "radius": np.full(k, 1.5 * noise * np.sqrt(DIM)),
        "core": np.full(k, 1.5 * noise * np.sqrt(DIM)),
        "demoted": np.zeros(k, bool), "avoid": pa.array([[] for _ in range(k)], pa.list_(pa.string())),
        "score_mean": pa.array(rng.standard_normal((k, ACTIONS)).tolist(), pa.list_(pa.float64())),
        "veto_rate": pa.array(rng.uniform(0, 1, (k, ACTIONS)).tolist(), pa.list_(pa.float64())),
        "outcome_types": pa.array(np.full((k, ACTIONS, 1), 1.0).tolist(), pa.list_(pa.list_(pa.float64()))),
    })
    h = s.policy_hidden
    policy = {"mean": np.zeros(DIM, np.float32), "std": np.ones(DIM, np.float32),
              "w1": rng.standard_normal((DIM, h)).astype(np.float32) / np.sqrt(DIM), "b1": np.zeros(h, np.float32),
              "w2": rng.standard_normal((h, h)).astype(np.float32) / np.sqrt(h), "b2": np.zeros(h, np.float32),
              "w3": rng.standard_normal((h, ACTIONS)).astype(np.float32), "b3": np.zeros(ACTIONS, np.float32),
              "scale": np.float64(1.0), "distance": np.float64(0.0), "shift": np.float64(0.0),
              "low": np.zeros(0, np.float32), "high": np.zeros(0, np.float32)}
    outcomes = faiss.IndexFlatL2(DIM)
    outcomes.add(centroids[:1])
    files = {"table.parquet": parquet(table), "outcomes.parquet": parquet(pa.table({"outcome_type": [0]})),
             "situations.faiss": faiss.serialize_index(index).tobytes(),
             "outcomes.faiss": faiss.serialize_index(outcomes).tobytes()}
    with io.BytesIO() as npz:
        np.savez(npz, **policy)
        files["policy.npz"] = npz.getvalue()
    publish.publish(home, "bench", files, {"encoder": "bench", "dim": DIM, "actions": actions, "min_support": 3.0,
                                           "policy_reach": 2.0, "thresholds": {"table": 0.5, "policy": 0.5}}, keep=1)
    queries = centroids[rng.integers(k, size=5000)] + noise * rng.standard_normal((5000, DIM)).astype(np.float32)
    return queries


def parquet(table: pa.Table) -> bytes:
    with io.BytesIO() as sink:
        pq.write_table(table, sink)
        return sink.getvalue()


def latencies(reflexes: Reflexes, index: faiss.Index, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-query µs of lookup (default threads) and of the raw search (one thread), interleaved; and how
    many lookups answered."""
    lookup, raw, answered = [], [], 0
    clock, threads = time.perf_counter_ns, faiss.omp_get_max_threads()
    for z in queries:
        faiss.omp_set_num_threads(1)
        t = clock()
        index.search(z[None], 1)
        raw.append(clock() - t)
        faiss.omp_set_num_threads(threads)
        t = clock()
        answered += reflexes.lookup(z) is not None
        lookup.append(clock() - t)
    return np.array(lookup) / 1000, np.array(raw) / 1000, answered


def busy_latencies(reflexes: Reflexes, queries: np.ndarray) -> np.ndarray:
    """Per-query µs of lookup while one CPU-bound process per core runs beside it."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.5)  # until the scheduler has them all running
        out = []
        for z in queries:
            t = time.perf_counter_ns()
            reflexes.lookup(z)
            out.append(time.perf_counter_ns() - t)
        return np.array(out) / 1000
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def throughput(fn, queries: np.ndarray, batch: int = 1024) -> float:
    started = time.perf_counter()
    for i in range(0, len(queries), batch):
        fn(queries[i:i + batch])
    return len(queries) / (time.perf_counter() - started)


def system2_ms(decisions: int = 50) -> float:
    """Mean ms of one reference-world System 2 decision (default planner, default-sized world model)."""
    import torch

    from dmn.worlds.model import WorldModel
    from dmn.worlds.plan import Planner, one_thread
    from dmn.worlds.settings import PlannerSettings, WorldSettings

    torch.manual_seed(0)
    w = WorldSettings()
    planner = Planner(WorldModel(4, 2, w.latent_dim, w.hidden).eval(), PlannerSettings())
    z = np.zeros(w.latent_dim, np.float32)
    with one_thread():
        planner.plan(z)
        started = time.perf_counter()
        for _ in range(decisions):
            planner.plan(z)
    return (time.perf_counter() - started) / decisions * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--queries", type=int, default=3000, help="batch-1 lookups per size")
    parser.add_argument("--threads", type=int, default=None,
                        help="FAISS's OpenMP threads (default: as the process starts, one per core)")
    args = parser.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    s2 = system2_ms()
    print(f"d={DIM}, {os.cpu_count()} cores, FAISS OpenMP threads {faiss.omp_get_max_threads()}; System 2 (reference "
          f"world, default planner, one thread): {s2:.2f} ms per decision; busy: {os.cpu_count()} CPU-bound processes beside")
    print(f"\n{'clusters':>9} {'lookup p50':>11} {'p99':>8} {'raw p50':>9} {'p99':>8} {'added':>7} {'busy p50':>9} {'p99':>8} "
          f"{'busy/idle p50':>14} {'p99':>6} {'answered':>9} {'batch/s':>10} {'raw batch/s':>12} {'vs System 2':>12}")
    for k in args.clusters:
        with tempfile.TemporaryDirectory() as tmp:
            home = Home.resolve(tmp)
            queries = bundle(home, k, rng)
            reflexes = Reflexes.open("bench", home=home, encoder="bench", check_every=3600)
            index = load(home, "bench").index  # the same published index, loaded the same way
            latencies(reflexes, index, queries[:200])  # warm up
            lookup, raw, answered = latencies(reflexes, index, queries[:args.queries])
            busy = busy_latencies(reflexes, queries[:args.queries])
            batch = throughput(reflexes.lookup_batch, queries)
            raw_batch = throughput(lambda q: index.search(q, 1), queries)
            (p50, p99), (r50, r99), (b50, b99) = (np.quantile(a, [.5, .99]) for a in (lookup, raw, busy))
            print(f"{k:>9,} {p50:>9.1f}µs {p99:>6.1f}µs {r50:>7.1f}µs {r99:>6.1f}µs {p50 - r50:>5.1f}µs {b50:>7.1f}µs "
                  f"{b99:>6.1f}µs {b50 / p50:>13.2f}x {b99 / p99:>5.1f}x {answered / args.queries:>8.1%} "
                  f"{batch:>10,.0f} {raw_batch:>12,.0f} {s2 * 1000 / p50:>11,.0f}x")
    print("\ntargets: lookup p50 <= raw + 5 µs, and <= 25 µs at 4,096 clusters; busy p50 <= 2x idle, p99 <= 10x idle")


if __name__ == "__main__":
    main()
