"""Cost of logging on the agent's hot path: microseconds per 768-d simulation record, and per step of a
V-JEPA 2-AC-sized planner (a 1408-d latent, 400 candidate 7-D actions with their scores, the chosen action).

    python benchmarks/logger.py

Times `EpisodeLogger.simulation()` with numpy latents (and torch tensors, if torch is installed):
the time the agent spends in the call (its hot path; files are written by a background thread),
and the time until every record is fsynced in the inbox. For reference, the cost of json.dumps on
the same record with the latents as plain lists (what a hand-rolled JSON logger would pay).

Then the planner's step, logged as `candidates()` (one call for the whole sample set, each candidate
without a copy of the latent) and `decision()`, against the same step as 400 `simulation()` calls that
each carry the latent, and against json.dumps of the step's records with lists.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

from dmn import EpisodeLogger


def per_record(records: int, make_state, dim: int) -> tuple[float, float]:
    """(µs per record the agent spends in simulation(), µs per record until all of it is on disk)."""
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        states = [make_state(rng.standard_normal(dim).astype(np.float32)) for _ in range(64)]
        with EpisodeLogger(tmp, world="bench", encoder="v1", flush_records=1000) as log:
            log.episode()
            started = time.perf_counter()
            for i in range(records):
                log.simulation(step=i // 8, state=states[i % 64], action=i % 4, score=0.5, predicted=states[(i + 1) % 64], cost_ms=12.0)
            hot = time.perf_counter() - started
            log.flush(wait=True)
            total = time.perf_counter() - started
        return hot / records * 1e6, total / records * 1e6


def per_step(steps: int, dim: int, candidates: int, action_dim: int) -> tuple[float, float, float]:
    """(µs per planner step on the agent's thread with `candidates()`, µs until on disk, µs on the agent's
    thread with one `simulation()` per candidate)."""
    rng = np.random.default_rng(0)
    states = [rng.standard_normal(dim).astype(np.float32) for _ in range(8)]
    actions = [rng.uniform(-1, 1, (candidates, action_dim)).astype(np.float32) for _ in range(8)]
    scores = [rng.standard_normal(candidates) for _ in range(8)]
    figures = []
    for batched in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            with EpisodeLogger(tmp, world="arm", encoder="vjepa2-ac", flush_records=20_000) as log:
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
                log.flush(wait=True)
                figures += [hot / steps * 1e6, (time.perf_counter() - started) / steps * 1e6]
    return figures[0], figures[1], figures[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--steps", type=int, default=200, help="planner steps of the V-JEPA 2-sized step")
    args = parser.parse_args()
    rows = [("EpisodeLogger.simulation, numpy latents", per_record(args.records, lambda a: a, args.dim))]
    try:
        import torch

        rows.append(("EpisodeLogger.simulation, torch latents", per_record(args.records, torch.from_numpy, args.dim)))
    except ImportError:
        pass
    rows = [(label, hot, f"{total:8.1f} µs/record with the writes to disk") for label, (hot, total) in rows]
    z = np.random.default_rng(0).standard_normal(args.dim).astype(np.float32)
    record = {"type": "simulation", "episode_id": "e", "step": 0, "state": z.tolist(), "action": 1, "score": 0.5,
              "predicted": z.tolist(), "cost_ms": 12.0}
    started = time.perf_counter()
    for _ in range(2000):
        json.dumps(record)
    rows.append(("json.dumps of the record with list latents (reference)", (time.perf_counter() - started) / 2000 * 1e6, ""))
    print(f"{args.records:,} simulation records, d={args.dim}; the agent's cost, then the cost until fsynced in the inbox")
    for label, micros, note in rows:
        print(f"  {label:<58} {micros:8.1f} µs/record   {note}")

    dim, k, a = 1408, 400, 7
    batched, on_disk, one_by_one = per_step(args.steps, dim, k, a)
    rng = np.random.default_rng(0)
    z, actions = rng.standard_normal(dim).astype(np.float32).tolist(), rng.uniform(-1, 1, (k, a)).tolist()
    started = time.perf_counter()
    for _ in range(20):
        for i in range(k):
            json.dumps({"type": "simulation", "episode_id": "e", "step": 0, "action": actions[i], "score": 0.5})
        json.dumps({"type": "decision", "episode_id": "e", "step": 0, "state": z, "action": actions[0]})
    reference = (time.perf_counter() - started) / 20 * 1e6
    print(f"{args.steps} planner steps of a V-JEPA 2-sized search: d={dim}, {k} candidates of {a}-D actions, the chosen one")
    print(f"  {'candidates() + decision()':<58} {batched:8.0f} µs/step     {on_disk:8.0f} µs/step with the writes to disk")
    print(f"  {'400 simulation() calls with the latent + decision()':<58} {one_by_one:8.0f} µs/step     "
          f"candidates() is {one_by_one / batched:.1f}x cheaper")
    print(f"  {'json.dumps of the step, lists, no latent per candidate':<58} {reference:8.0f} µs/step     (reference)")


if __name__ == "__main__":
    main()
