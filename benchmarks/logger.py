"""Cost of logging on the agent's hot path, against the floor measured in the same run.

    python benchmarks/logger.py
    python benchmarks/logger.py --records 5000   # quicker

- One 768-d simulation record (a state and a predicted latent, an action, a score, a cost) per call of
  `EpisodeLogger.simulation()`, with numpy latents and with torch tensors: the time the agent spends in
  the call (files are written by a background thread), and the time until every record is fsynced in
  the inbox after `close()`. The floor: the same records made the cheapest way there is, in a plain
  loop on one thread (base64 of the float32 bytes spliced into a byte template, written to a file).
- A search's 128 candidates logged in one `candidates()` call: microseconds per candidate.
- A V-JEPA 2-AC-sized planner's step (a 1408-d latent, 400 candidate 7-D actions with their scores, the
  chosen action) as `candidates()` + `decision()`, against 400 `simulation()` calls that each carry the
  latent, and against json.dumps of the step's records with lists (a hand-rolled JSON logger).

Targets: simulation() <= 1.5x the floor and <= 15 µs; <= 3 µs per candidate in a batch of 128.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from dmn import EpisodeLogger

RECORD = (b'{"type":"simulation","episode_id":"%s","step":%d,"score":%r,"ts":%.6f,"cost_ms":%r,"action":%d,'
          b'"state":{"__type__":"Tensor","shape":[%d],"dtype":"float32","b64":"%s"},'
          b'"predicted":{"__type__":"Tensor","shape":[%d],"dtype":"float32","b64":"%s"}}\n')


def latents(dim: int, n: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(dim).astype(np.float32) for _ in range(n)]


def floor(records: int, dim: int) -> float:
    """µs per record: the same records, base64 spliced into a byte template, written in a plain loop."""
    states = latents(dim)
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp, "floor.jsonl"), "wb") as f:
        started = time.perf_counter()
        for i in range(records):
            f.write(RECORD % (b"e", i // 8, 0.5, time.time(), 12.0, i % 4, dim, base64.b64encode(states[i % 64].tobytes()),
                              dim, base64.b64encode(states[(i + 1) % 64].tobytes())))
        return (time.perf_counter() - started) / records * 1e6


def per_record(records: int, dim: int, make_state) -> tuple[float, float]:
    """(µs per record the agent spends in simulation(), µs per record until all of it is on disk)."""
    states = [make_state(z) for z in latents(dim)]
    with tempfile.TemporaryDirectory() as tmp:
        log = EpisodeLogger(tmp, world="bench", encoder="v1", flush_records=1000)
        log.episode()
        started = time.perf_counter()
        for i in range(records):
            log.simulation(step=i // 8, state=states[i % 64], action=i % 4, score=0.5, predicted=states[(i + 1) % 64],
                           cost_ms=12.0)
        hot = time.perf_counter() - started
        log.close()
        total = time.perf_counter() - started
        assert sum(1 for p in Path(tmp, "inbox").glob("*.jsonl") for _ in open(p, "rb")) == records + 1
        return hot / records * 1e6, total / records * 1e6


def per_candidate(steps: int, k: int, action_dim: int, dim: int | None) -> float:
    """µs per candidate on the agent's thread, `k` candidates (with `dim`-d predicted latents, or none) a call."""
    rng = np.random.default_rng(0)
    actions = [rng.uniform(-1, 1, (k, action_dim)).astype(np.float32) for _ in range(8)]
    scores = [rng.standard_normal(k) for _ in range(8)]
    predicted = [None if dim is None else rng.standard_normal((k, dim)).astype(np.float32) for _ in range(8)]
    with tempfile.TemporaryDirectory() as tmp, EpisodeLogger(tmp, world="arm", encoder="v1", flush_records=20_000) as log:
        log.episode()
        started = time.perf_counter()
        for step in range(steps):
            log.candidates(step, actions[step % 8], scores[step % 8], predicted=predicted[step % 8], cost_ms=40.0)
        return (time.perf_counter() - started) / (steps * k) * 1e6


def per_step(steps: int, dim: int, candidates: int, action_dim: int) -> tuple[float, float, float]:
    """(µs per planner step on the agent's thread with `candidates()`, µs until on disk, µs on the agent's
    thread with one `simulation()` per candidate)."""
    rng = np.random.default_rng(0)
    states = latents(dim, 8)
    actions = [rng.uniform(-1, 1, (candidates, action_dim)).astype(np.float32) for _ in range(8)]
    scores = [rng.standard_normal(candidates) for _ in range(8)]
    figures = []
    for batched in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            log = EpisodeLogger(tmp, world="arm", encoder="vjepa2-ac", flush_records=20_000)
            log.episode()
            started = time.perf_counter()
            for step in range(steps):
                z, a, score = states[step % 8], actions[step % 8], scores[step % 8]
                if batched:
                    log.candidates(step, a, score, cost_ms=40.0)
                else:
                    for i in range(candidates):
                        log.simulation(step, z, a[i], float(score[i]), cost_ms=40.0)
                log.decision(step, z, a[0], source="system2", latency_ms=16_000.0)
            hot = time.perf_counter() - started
            log.close()
            figures += [hot / steps * 1e6, (time.perf_counter() - started) / steps * 1e6]
    return figures[0], figures[1], figures[2]


def json_step(dim: int, k: int, action_dim: int) -> float:
    """µs per planner step for json.dumps of its records with lists (the reference)."""
    rng = np.random.default_rng(0)
    z, actions = rng.standard_normal(dim).astype(np.float32).tolist(), rng.uniform(-1, 1, (k, action_dim)).tolist()
    started = time.perf_counter()
    for _ in range(20):
        for i in range(k):
            json.dumps({"type": "simulation", "episode_id": "e", "step": 0, "action": actions[i], "score": 0.5})
        json.dumps({"type": "decision", "episode_id": "e", "step": 0, "state": z, "action": actions[0]})
    return (time.perf_counter() - started) / 20 * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--steps", type=int, default=200, help="planner steps of the V-JEPA 2-sized step")
    args = parser.parse_args()
    base = floor(args.records, args.dim)
    rows = [("EpisodeLogger.simulation, numpy latents", per_record(args.records, args.dim, lambda z: z))]
    try:
        import torch

        rows.append(("EpisodeLogger.simulation, torch latents", per_record(args.records, args.dim, torch.from_numpy)))
    except ImportError:
        pass
    print(f"{args.records:,} simulation records, d={args.dim}, {os.cpu_count()} cores: on the agent's thread, "
          "then until fsynced in the inbox")
    print(f"  {'floor: base64 into a byte template, written, one thread':<58} {base:8.1f} µs/record")
    for label, (hot, total) in rows:
        print(f"  {label:<58} {hot:8.1f} µs/record  {hot / base:5.2f}x the floor   {total:8.1f} µs/record to disk")
    for label, dim in (("128 candidates of 7-D actions per candidates() call", None),
                       (f"the same with {args.dim}-d predicted latents", args.dim)):
        print(f"  {label:<58} {per_candidate(max(args.records // 128, 20), 128, 7, dim):8.2f} µs/candidate")

    dim, k, a = 1408, 400, 7
    batched, on_disk, one_by_one = per_step(args.steps, dim, k, a)
    print(f"{args.steps} planner steps of a V-JEPA 2-sized search: d={dim}, {k} candidates of {a}-D actions, the chosen one")
    print(f"  {'candidates() + decision()':<58} {batched:8.0f} µs/step     {on_disk:8.0f} µs/step with the writes to disk")
    print(f"  {'400 simulation() calls with the latent + decision()':<58} {one_by_one:8.0f} µs/step     "
          f"candidates() is {one_by_one / batched:.1f}x cheaper")
    print(f"  {'json.dumps of the step, lists, no latent per candidate':<58} {json_step(dim, k, a):8.0f} µs/step     (reference)")
    print("targets: simulation() <= 1.5x the floor and <= 15 µs; <= 3 µs per candidate in a batch of 128")


if __name__ == "__main__":
    main()
