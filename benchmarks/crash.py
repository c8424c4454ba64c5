"""Kill `dmn ingest` and `dmn consolidate` with SIGKILL, many times, at named stages and at random moments,
and count what was lost.

    python benchmarks/crash.py                 # 60 rounds, seed 1
    python benchmarks/crash.py --rounds 100 --seed 3

Each round drops a day of synthetic logs into the inbox and starts `dmn ingest` or `dmn consolidate`.
Every other round it dies at a kill point (dmn.faults), all of them in turn in a seeded order; in the
others it is SIGKILLed after a random delay. After every kill `dmn.ops.status.check` must find the
home whole: its catalog opens, no record is there twice, the published pointer names a bundle whose
checksums verify. At the end one `dmn consolidate` runs to completion, and the lake must hold exactly
what was logged. The suite runs a short version of this (`tests/test_reliability.py`).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

from dmn import Home
from dmn.bundle import publish
from dmn.faults import POINTS
from dmn.ops.status import check
from dmn.worlds.synthetic import write_logs

EPISODES, STEPS, ACTIONS = 8, 20, 3
SEVERAL_PASSES = {"ingest.read", "ingest.staged", "ingest.rolled", "atomic.written"}
"""Points a night passes more than once (files, batches, atomic writes): killed at the first or second pass."""


def whole(home: Home) -> dict:
    result = check(home)
    if result["problems"]:
        raise SystemExit("DAMAGED: " + "; ".join(result["problems"]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        home = Home.resolve(tmp)
        (home.root / "dmn.toml").write_text("[consolidate]\npolicy_hidden = 16\npolicy_epochs = 5\nkeep = 3\n")
        logged = [0, 0]
        at_points: Counter[str] = Counter()
        at_random: Counter[str] = Counter()
        points: list[str] = []
        started = time.perf_counter()
        for round_ in range(args.rounds):
            write_logs(home, situations=4, dim=32, episodes=EPISODES, steps=STEPS, accuracy=1.0, day=round_)
            logged[0] += EPISODES * STEPS
            logged[1] += EPISODES * STEPS * ACTIONS
            env = dict(os.environ)
            if round_ % 2 == 0:  # the kill points in a seeded order, again and again
                if not points:
                    points = rng.sample(sorted(POINTS), len(POINTS))
                point = points.pop()
                nth = rng.choice([1, 1, 2]) if point in SEVERAL_PASSES else 1
                env["DMN_KILL_AT"] = f"{point}:{nth}"
                command = "ingest" if point.startswith("ingest.") and rng.random() < 0.5 else "consolidate"
            else:
                command = rng.choice(["ingest", "consolidate"])
            victim = subprocess.Popen([sys.executable, "-m", "dmn", command, "--home", str(home.root)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            if "DMN_KILL_AT" in env:
                if victim.wait() == -signal.SIGKILL:
                    at_points[env["DMN_KILL_AT"].split(":")[0]] += 1
            else:
                time.sleep(rng.uniform(0.3, 6.0) if command == "consolidate" else rng.uniform(0.5, 1.6))
                at_random[command] += victim.poll() is None
                victim.send_signal(signal.SIGKILL)
                victim.wait()
            whole(home)
        done = subprocess.run([sys.executable, "-m", "dmn", "consolidate", "--home", str(home.root)],
                              capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"the final night failed: {done.stderr}")
        result = whole(home)
        decisions, simulations = result["decisions"], result["simulations"]
        print(f"{args.rounds} rounds in {time.perf_counter() - started:.0f} s (seed {args.seed}): "
              f"{sum(at_points.values())} SIGKILLs at {len(at_points)} distinct kill points, "
              f"{sum(at_random.values())} at random moments that caught a process running "
              f"({at_random['ingest']} dmn ingest, {at_random['consolidate']} dmn consolidate)")
        print("kill points hit: " + ", ".join(f"{p} x{n}" for p, n in sorted(at_points.items())))
        print(f"after a last night: {decisions:,} of {logged[0]:,} decisions and {simulations:,} of {logged[1]:,} "
              f"simulations in the lake; lost {logged[0] - decisions + logged[1] - simulations}, duplicated 0; "
              f"bundle {publish.current(home, 'synthetic')} verifies")


if __name__ == "__main__":
    main()
