"""How well the reference world's System 2 plans, next to a random policy on the same episodes.

    python benchmarks/world.py                          # CartPole-v1 and Acrobot-v1, 20 episodes each
    python benchmarks/world.py --env CartPole-v1 --episodes 5

For each environment, on a fresh home with the default settings: trains the world model (timed),
runs System 2 alone for `--episodes` episodes, and plays a uniformly random policy from the same
seeds. Prints mean / min / max return of both, the ratio, System 2's time per decision and the
simulations it logs per decision. CartPole-v1 counts as solved at a mean return of 195 or more.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

from dmn.home import Home
from dmn.worlds.agent import random_returns, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", action="append", help="Environment id (repeatable; default CartPole-v1 and Acrobot-v1).")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="Print one JSON object per environment instead.")
    args = parser.parse_args()
    for env_id in args.env or ["CartPole-v1", "Acrobot-v1"]:
        with tempfile.TemporaryDirectory() as tmp:
            home = Home.resolve(tmp)
            started = time.perf_counter()
            report = run(home, env_id, 1, seed=10**6)  # trains the model; this episode is not counted
            train_s = time.perf_counter() - started - report.seconds
            report = run(home, env_id, args.episodes, seed=args.seed)
        s2, rnd = report.to_dict(), random_returns(env_id, args.episodes, args.seed)
        row = {"env": env_id, "episodes": args.episodes, "train_s": round(train_s, 1),
               "system2_mean": s2["mean_return"], "system2_min": s2["min_return"], "system2_max": s2["max_return"],
               "random_mean": float(np.mean(rnd)), "random_min": min(rnd), "random_max": max(rnd),
               "decision_ms": s2["system2_latency_ms"], "simulations_per_decision": s2["simulations"] / s2["decisions"]}
        if args.json:
            print(json.dumps(row))
            continue
        print(f"{env_id}: world model trained in {row['train_s']} s; {args.episodes} episodes each")
        print(f"  System 2   mean {row['system2_mean']:8.1f}   min {row['system2_min']:7.1f}   max {row['system2_max']:7.1f}"
              f"   {row['decision_ms']:.1f} ms/decision, {row['simulations_per_decision']:.0f} simulations logged/decision")
        print(f"  random     mean {row['random_mean']:8.1f}   min {row['random_min']:7.1f}   max {row['random_max']:7.1f}")
        print(f"  System 2 - random = {row['system2_mean'] - row['random_mean']:+.1f}")


if __name__ == "__main__":
    main()
