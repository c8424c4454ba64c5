"""Cost of logging on the agent's hot path: microseconds per 768-d simulation record.

    python benchmarks/logger.py

Times `EpisodeLogger.simulation()` with numpy latents (and torch tensors, if torch is installed):
the time the agent spends in the call (its hot path; files are written by a background thread),
and the time until every record is fsynced in the inbox. For reference, the cost of json.dumps on
the same record with the latents as plain lists (what a hand-rolled JSON logger would pay).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=768)
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


if __name__ == "__main__":
    main()
