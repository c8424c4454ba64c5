"""End-to-end cost of a night: from the lake to a published bundle, at d=768, for N and 2N simulations.

    python benchmarks/consolidate.py                 # N = 100,000 simulations (4 candidate actions per decision)
    python benchmarks/consolidate.py --simulations 20000

For each size, on a fresh home: synthetic System 2 logs (`dmn.worlds.synthetic`: Gaussian situations with
known best actions) are written and ingested first (timed apart), then `consolidate` runs from the
lake to a published bundle. Prints per-stage seconds, simulations per second, and the ratio
time(2N) / time(N) measured in the same run (linear scaling gives 2.0). A small night runs first, untimed,
so that neither size pays the process's one-time imports (torch and the compiler stack its optimisers load,
scikit-learn: about 2.5 s, which `benchmarks/startup.py` and a whole `dmn consolidate` process show).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from dmn.home import Home
from dmn.lake.ingest import ingest
from dmn.sleep.night import consolidate
from dmn.worlds.synthetic import write_logs

STEPS, ACTIONS = 50, 4


def night(simulations: int, dim: int, situations: int) -> tuple[float, float, dict]:
    """(ingest seconds, consolidation seconds, the consolidation) for `simulations` simulations."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Home.resolve(tmp)
        write_logs(home, situations=situations, actions=ACTIONS, dim=dim, steps=STEPS,
                   episodes=max(3, simulations // (STEPS * ACTIONS)))
        started = time.perf_counter()
        ingest(home)
        ingested = time.perf_counter()
        result = consolidate(home)[0]
        done = time.perf_counter()
        return ingested - started, done - ingested, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--simulations", type=int, default=100_000, help="N (the second night has 2N)")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--situations", type=int, default=256)
    args = parser.parse_args()
    night(2_000, args.dim, 16)  # the imports, paid once
    totals = []
    for n in (args.simulations, 2 * args.simulations):
        ingest_s, seconds, result = night(n, args.dim, args.situations)
        sims = result.counts["simulations"]
        totals.append(seconds)
        m = result.metrics["combined"]
        print(f"{sims:>9,} simulations, {result.counts['steps']:,} decisions, d={args.dim}: "
              f"{seconds:6.2f} s lake -> bundle, {sims / seconds:8,.0f} simulations/s   "
              f"(ingest beforehand {ingest_s:.1f} s; {result.status} {result.version}; "
              f"test coverage {m['coverage']:.3f}, precision {m['precision']:.3f})")
        print("    stages: " + ", ".join(f"{stage} {s:.2f}" for stage, s in result.seconds.items())
              + f", other {seconds - sum(result.seconds.values()):.2f}")
    print(f"time(2N) / time(N) = {totals[1] / totals[0]:.2f}")


if __name__ == "__main__":
    main()
