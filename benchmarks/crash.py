"""Kill `dmn ingest` and `dmn consolidate` with SIGKILL at random moments, many times, and count what was lost.

    python benchmarks/crash.py                 # 40 rounds, seed 1
    python benchmarks/crash.py --rounds 100 --seed 3

Each round drops a day of synthetic logs into the inbox, starts `dmn ingest` or `dmn consolidate`
(alternately), and SIGKILLs it after a random delay; after every kill the home must hold no record
twice, its catalog must open, and the published pointer must name a bundle whose checksums verify.
At the end one `dmn consolidate` runs to completion, and the lake must hold exactly what was logged.
The suite runs a short version of this (`tests/test_reliability.py`).
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time

from dmn import Home, publish
from dmn.store import Store
from dmn.synthetic import write_logs

EPISODES, STEPS, ACTIONS = 8, 20, 3


def invariants(home: Home) -> tuple[int, int]:
    """(decisions, simulations) in the lake, after checking nothing is there twice and the bundle verifies."""
    store = Store(home)
    decisions, keys = store.sql("SELECT count(*), count(DISTINCT (episode_id, step)) FROM decisions").fetchone()
    episodes, distinct = store.sql("SELECT count(*), count(DISTINCT episode_id) FROM episodes").fetchone()
    if decisions != keys or episodes != distinct:
        raise SystemExit(f"DUPLICATES: {decisions - keys} decisions, {episodes - distinct} episodes")
    version = publish.current(home, "synthetic")
    if version is not None:
        publish.verify(publish.folder(home, "synthetic") / version)
    return decisions, store.sql("SELECT count(*) FROM simulations").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        home = Home.resolve(tmp)
        (home.root / "dmn.toml").write_text("[consolidate]\npolicy_hidden = 16\npolicy_epochs = 5\n")
        logged = [0, 0]
        caught = {"ingest": 0, "consolidate": 0}
        started = time.perf_counter()
        for round_ in range(args.rounds):
            write_logs(home, situations=4, dim=32, episodes=EPISODES, steps=STEPS, accuracy=1.0, day=round_)
            logged[0] += EPISODES * STEPS
            logged[1] += EPISODES * STEPS * ACTIONS
            command = "ingest" if round_ % 2 else "consolidate"
            victim = subprocess.Popen([sys.executable, "-m", "dmn", command, "--home", str(home.root)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.3, 6.0) if command == "consolidate" else rng.uniform(0.8, 2.2))
            caught[command] += victim.poll() is None
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            invariants(home)
        done = subprocess.run([sys.executable, "-m", "dmn", "consolidate", "--home", str(home.root)],
                              capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"the final night failed: {done.stderr}")
        decisions, simulations = invariants(home)
        print(f"{args.rounds} SIGKILLs in {time.perf_counter() - started:.0f} s (seed {args.seed}): "
              f"{caught['ingest']} caught dmn ingest running, {caught['consolidate']} dmn consolidate")
        print(f"after a last night: {decisions:,} of {logged[0]:,} decisions and {simulations:,} of {logged[1]:,} "
              f"simulations in the lake; lost {logged[0] - decisions + logged[1] - simulations}, duplicated 0; "
              f"bundle {publish.current(home, 'synthetic')} verifies")


if __name__ == "__main__":
    main()
