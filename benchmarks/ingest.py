"""Ingest throughput: `dmn ingest` against DuckDB's own read_json -> Parquet, on the same file, in one run.

    python benchmarks/ingest.py                 # 50,000 simulations of 768-d latents
    python benchmarks/ingest.py --records 5000  # quicker

Prints records/s for each and the ratio to DuckDB told the columns (target: >= 0.8, on JSON arrays and on
tensor objects). `dmn ingest` is timed as a whole process, start-up included. Each figure is the best of
--repeat runs on a fresh home; the files are made by DuckDB, so making them costs little.

Then a V-JEPA 2-AC-sized planner's log, as `dmn.EpisodeLogger` writes it: per step a decision with a
1408-d latent and its chosen 7-D action, and 400 candidate actions with their scores (simulations
without a state of their own), ingested by dmn and by DuckDB's read_json on the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb


def make_file(path: Path, records: int, dim: int, tensors: bool) -> None:
    """An episode record, then `records` simulation records with `dim`-d state and predicted latents."""
    con = duckdb.connect()
    vec = f"list_transform(range({dim}), lambda i: round(random() * 2 - 1, 6)::FLOAT)"
    if tensors:  # base64 tensor objects, as dmn.EpisodeLogger writes them
        con.create_function("b64f32", lambda v: __import__("base64").b64encode(
            __import__("numpy").asarray(v, "<f4").tobytes()).decode(), ["FLOAT[]"], "VARCHAR")
        vec = f"{{'__type__': 'Tensor', 'shape': [{dim}], 'dtype': 'float32', 'b64': b64f32({vec})}}"
    body = path.with_suffix(".body")
    con.execute(f"""COPY (SELECT 'simulation' AS type, 'ep' || (i // 500) AS episode_id, i % 500 AS step,
                      {vec} AS state, (i % 4)::INTEGER AS action, random() AS score, {vec} AS predicted,
                      random() * 50 AS cost_ms
                    FROM range({records}) t(i)) TO '{body}' (FORMAT json)""").fetchall()
    with open(path, "wb") as out:
        for e in range(records // 500 + 1):
            out.write((json.dumps({"type": "episode", "episode_id": f"ep{e}", "world": "bench", "encoder": "v1"}) + "\n").encode())
        with open(body, "rb") as f:
            while block := f.read(1 << 24):
                out.write(block)
    body.unlink()


def make_planner_file(path: Path, steps: int, dim: int = 1408, candidates: int = 400, action_dim: int = 7) -> int:
    """A planner's log of `steps` steps (episodes of 50), as the logger writes it; returns its record count."""
    import numpy as np

    from dmn import EpisodeLogger

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        with EpisodeLogger(tmp, world="arm", encoder="vjepa2-ac", flush_records=50_000) as log:
            for step in range(steps):
                if step % 50 == 0:
                    log.episode()
                actions = rng.uniform(-1, 1, (candidates, action_dim)).astype(np.float32)
                log.candidates(step % 50, actions, rng.standard_normal(candidates), cost_ms=40.0)
                log.decision(step % 50, rng.standard_normal(dim).astype(np.float32), actions[0], latency_ms=16_000.0)
        with open(path, "wb") as out:
            for part in sorted(Path(tmp, "inbox").glob("*.jsonl")):
                out.write(part.read_bytes())
    return steps * (candidates + 1) + -(-steps // 50)


def time_dmn(path: Path, work: Path) -> float:
    home = Path(tempfile.mkdtemp(dir=work))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dmn", "ingest", str(path), "--home", str(home), "--json"],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"dmn ingest failed:\n{done.stderr}")
    seconds = time.perf_counter() - started
    report = json.loads(done.stdout)
    assert report["quarantined"] == {}, report
    return seconds


TENSOR = "STRUCT(__type__ VARCHAR, shape BIGINT[], dtype VARCHAR, b64 VARCHAR)"


def time_duckdb(path: Path, work: Path, latent: str | None) -> float:
    """DuckDB's read_json -> Parquet: told the columns, latents typed `latent` (None: DuckDB guesses the schema)."""
    out = Path(tempfile.mkdtemp(dir=work)) / "out.parquet"
    con = duckdb.connect()
    started = time.perf_counter()
    if latent:  # the schema spelled out: DuckDB at its fastest
        source = ("read_json(?, format='newline_delimited', columns={type: 'VARCHAR', episode_id: 'VARCHAR', world: 'VARCHAR', "
                  f"encoder: 'VARCHAR', step: 'BIGINT', state: '{latent}', action: 'BIGINT', score: 'DOUBLE', "
                  f"predicted: '{latent}', cost_ms: 'DOUBLE'}})")
    else:
        source = "read_json(?)"
    con.execute(f"COPY (SELECT * FROM {source}) TO '{out}' (FORMAT parquet)", [str(path)]).fetchall()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=50_000, help="simulation records in the file")
    parser.add_argument("--dim", type=int, default=768, help="latent dimension")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best counts")
    parser.add_argument("--steps", type=int, default=2000, help="planner steps in the V-JEPA 2-sized log")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = []
        for tensors in (False, True):
            path = work / f"sims-{'b64' if tensors else 'json'}.jsonl"
            make_file(path, args.records, args.dim, tensors)
            size = path.stat().st_size
            dmn = min(time_dmn(path, work) for _ in range(args.repeat))
            typed = min(time_duckdb(path, work, TENSOR if tensors else "FLOAT[]") for _ in range(args.repeat))
            what = "tensor objects (b64)" if tensors else "JSON arrays"
            rows += [(f"dmn ingest, {what}, {size / 2**20:.0f} MiB", dmn, None),
                     (f"DuckDB read_json -> Parquet, columns given ({'b64 as text' if tensors else 'FLOAT[]'})", typed, dmn)]
            if not tensors:
                rows.append(("DuckDB read_json -> Parquet, schema guessed", min(
                    time_duckdb(path, work, None) for _ in range(args.repeat)), dmn))
        path = work / "planner.jsonl"
        records = make_planner_file(path, args.steps)
        dmn = min(time_dmn(path, work) for _ in range(args.repeat))
        auto = min(time_duckdb(path, work, None) for _ in range(args.repeat))
        planner = [(f"dmn ingest, {path.stat().st_size / 2**20:.0f} MiB", dmn, None),
                   ("DuckDB read_json -> Parquet (default)", auto, dmn)]
    n = args.records
    print(f"{n:,} simulation records, d={args.dim}, best of {args.repeat}, {os.cpu_count()} cores, duckdb {duckdb.__version__}")
    for label, seconds, dmn in rows:
        ratio = f"   dmn/this = {seconds / dmn:.2f}" if dmn else ""
        print(f"  {label:<58} {seconds:7.2f} s  {n / seconds:10,.0f} records/s{ratio}")
    print(f"{args.steps} steps of a V-JEPA 2-sized planner ({records:,} records: d=1408 decisions, 400 candidates of "
          f"7-D actions per step), best of {args.repeat}")
    for label, seconds, dmn in planner:
        ratio = f"   dmn/this = {seconds / dmn:.2f}" if dmn else ""
        print(f"  {label:<58} {seconds:7.2f} s  {args.steps / seconds:10,.0f} steps/s  "
              f"{records / seconds:10,.0f} records/s{ratio}")


if __name__ == "__main__":
    main()
