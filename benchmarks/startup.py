"""Start-up: a night with nothing new, `dmn sql "SELECT 1"` and `dmn status`, as whole processes, on a home of
one night and on a home of many past nights, in one run; and what each home holds on disk.

    python benchmarks/startup.py                 # 1,000 past nights
    python benchmarks/startup.py --nights 100    # quicker

Each home is made as nights make it: per night, an agent's day of synthetic System 2 logs (`dmn.worlds.
synthetic`, a few episodes at d=64) ingested as its own batch, and the night's run record. The first night
is consolidated for real (a bundle is published); the run records of the nights after it are that record
again, each with its own id, start and watermark (a thousand real nights would take hours to make). Then
`dmn consolidate` (ingest of an empty inbox, then a night with nothing new), `dmn sql "SELECT 1"` and
`dmn status` run as new processes, best of --repeat. Ingest compacts the batches as the nights come
(`[ingest] compact_batches`), the files they replaced are deleted as the next day's ingest would, and the
first night measured moves the old run records into their months' files.

Targets: a night with nothing new <= 1.5 s and `dmn sql "SELECT 1"` <= 0.6 s, both within 20% on the home
of many nights; `dmn status` reads all of the lake, so it grows with the data, not with the number of nights.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from dmn.home import Home
from dmn.lake.compact import SWEEP_AFTER_SECONDS, compact
from dmn.lake.ingest import ingest
from dmn.lake.store import Store
from dmn.sleep.experience import pairs
from dmn.sleep.night import consolidate
from dmn.worlds.synthetic import write_logs


def make_home(root: Path, nights: int) -> Home:
    """A home after `nights` nights of one world."""
    home = Home.resolve(root)
    for day in range(nights):
        write_logs(home, situations=4, dim=64, episodes=3, steps=10, day=day)
        ingest(home)
        if day == 0:
            consolidate(home)
    first = json.loads(next(home.runs.glob("*.json")).read_bytes())
    watermark = pairs(Store(home))[0][2]
    start = datetime.now(timezone.utc) - timedelta(days=nights)
    for day in range(1, nights):  # the later nights' records, the last one up to date
        started = (start + timedelta(days=day)).isoformat()
        record = {**first, "run_id": uuid.uuid4().hex[:12], "started_at": started, "ended_at": started,
                  "watermark": watermark if day == nights - 1 else f"{first['watermark']}{day:04d}"}
        (home.runs / f"{started[:19].replace(':', '')}-{record['run_id']}.json").write_text(json.dumps(record, indent=1))
    with home.lock("ingest"):  # the files compactions replaced, which the next day's ingest would delete
        compact(home, Store(home), home.settings().ingest,
                datetime.now(timezone.utc) + timedelta(seconds=SWEEP_AFTER_SECONDS))
    return home


def files_and_bytes(home: Home) -> dict[str, tuple[int, int]]:
    """Per folder of the home that history fills, its files and bytes."""
    out = {}
    for folder in (home.catalog, home.lake, home.runs):
        sizes = [p.stat().st_size for p in folder.rglob("*") if p.is_file()]
        out[folder.name] = (len(sizes), sum(sizes))
    return out


def seconds(commands: list[list[str]], repeat: int) -> list[float]:
    """Best wall time of each `dmn <command>` as a new process, the commands taken in turn `repeat` times (so that
    the machine's drift falls on all of them alike)."""
    best = [float("inf")] * len(commands)
    for _ in range(repeat):
        for i, args in enumerate(commands):
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "dmn", *args], capture_output=True, text=True)
            best[i] = min(best[i], time.perf_counter() - started)
            if done.returncode:
                raise SystemExit(f"dmn {' '.join(args)} failed:\n{done.stderr}")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nights", type=int, default=1000, help="past nights in the big home")
    parser.add_argument("--repeat", type=int, default=7, help="runs of each command, in turn; the best counts")
    parser.add_argument("--keep", type=Path, default=None,
                        help="make the homes in this folder and keep them (measured again without making them anew)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        started = time.perf_counter()
        homes = {n: Home.resolve(root / f"nights-{n}") if (root / f"nights-{n}").exists()
                 else make_home(root / f"nights-{n}", n) for n in (1, args.nights)}
        print(f"homes made in {time.perf_counter() - started:.0f} s")
        commands = [[command, *rest, "--home", str(h.root)] for h in homes.values()
                    for command, *rest in (["consolidate"], ["sql", "SELECT 1"], ["status"])]
        times = seconds(commands, args.repeat)
        disk = [files_and_bytes(h) for h in homes.values()]
    print(f"{'':<34} {'1 night':>9} {f'{args.nights:,} nights':>13} {'ratio':>7}")
    for label, one, many in zip(("dmn consolidate, nothing new", 'dmn sql "SELECT 1"', "dmn status"), times, times[3:]):
        print(f"{label:<34} {one:8.2f}s {many:12.2f}s {many / one:6.2f}x")
    for folder, (one, many) in {f: (disk[0][f], disk[1][f]) for f in disk[0]}.items():
        label = f"{folder}/ files, MiB"
        print(f"{label:<34} {one[0]:>3} {one[1] / 2**20:5.1f} {many[0]:>6} {many[1] / 2**20:6.1f} {many[1] / one[1]:6.0f}x")
    print("targets: nothing new <= 1.5 s, SELECT 1 <= 0.6 s, each within 1.2x on the home of many nights")


if __name__ == "__main__":
    main()
