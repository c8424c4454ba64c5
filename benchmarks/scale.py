"""Scale: ingest and the night on the local engine and on Ray with 1 and 2 worker nodes, on the same logs, in
one run; and from those measurements, the time of a fleet's night of logs on N nodes.

    python benchmarks/scale.py                 # 16 files of synthetic System 2 logs, 1408-d latents
    python benchmarks/scale.py --files 4       # quicker

The Ray cluster is real (`ray.cluster_utils.Cluster`: a head for the driver, and worker nodes of one CPU
each, all on this machine), so the 2-worker figures share this machine's cores with the driver: on a
two-core machine they show what the tasks cost, not what more machines would give. Each engine ingests
the same files into a home of its own and consolidates it at the same moment; every home must end with the
same rows and the same bundle (checked).

The projection (stated with its figures): a stage that runs as tasks takes bytes / (N x its measured bytes/s
per worker, a worker being a CPU); the driver's part (plan, connect, commit) is measured per file and
stays; so T(N) = driver + sum over task stages of bytes / (N x rate). The fleet: 1,000 robots logging at
4 Hz for 8 hours with 8 candidates per step: 115 million decisions and 0.9 billion simulations, each with
a 1408-d latent (V-JEPA 2's ViT-g width), as `dmn.EpisodeLogger` writes them (base64 float32).

The night's model: on Ray, what grows with the steps runs as tasks: the read, what is computed for every state
(its situation, System 1's answers on the held-out steps: `mapped`) and the typing of imagined consequences
(the outcomes stage), each at the steps per second per worker of the 1-worker run. The driver fits on
bounded samples: the situations' k-means on at most 256 states a situation (k about sqrt(train / 2)), the
PCA on at most 50,000, the policy on at most `policy_sample` steps; those three are measured here at the
fleet's sizes on random states of the same size (the k-means at a quarter of its k, scaled by k squared,
when its k is over 64), the policy at its measured seconds per step and epoch for all `policy_epochs` (an
upper bound: training stops early). The rest of the driver's part (sums of per-step scalars: the table's
aggregates, the held-out figures; publishing) is what the 1-worker night's driver took beyond its k-means
and PCA (measured as above at its own sizes) and its policy stage, taken as linear in steps. So
T(N) = steps x (1 / read + 1 / mapped + 1 / outcomes rate) / N + fits + rest. Every read task also scans
the window's keys and scalars to find its shard's steps, which a larger cluster does not shorten; that
scan is inside the measured rate.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from dmn.bundle.load import load
from dmn.config import ConsolidateSettings
from dmn.home import Home
from dmn.lake.ingest import ingest
from dmn.lake.store import Store
from dmn.sleep.cluster import (
    PCA_SAMPLE,
    POINTS_PER_CENTROID,
    centroid_index,
    kmeans,
    situation_count,
)
from dmn.sleep.evaluate import split
from dmn.sleep.experience import Window
from dmn.sleep.night import Consolidation, consolidate
from dmn.sleep.train import train_policy
from dmn.worlds.synthetic import write_logs

FLEET_DECISIONS = 115_000_000
FLEET_SIMULATIONS = 920_000_000
TASK_STAGES = ("parse", "tally", "resolve")
DRIVER_STAGES = ("plan", "connect", "commit")
NIGHT_STAGES = ("cluster", "outcomes", "table", "policy", "evaluate", "publish")
"""The night's stages after its read ("select"); on Ray, their `mapped` part and the outcomes' typing run as
tasks, the rest on the driver."""


def make_logs(folder: Path, files: int, dim: int) -> int:
    """`files` days of a synthetic world's System 2 logs (a file each); returns their bytes."""
    home = Home.resolve(folder)
    for day in range(files):
        write_logs(home, situations=8, dim=dim, episodes=6, steps=25, accuracy=1.0, day=day)
    return sum(p.stat().st_size for p in home.inbox.rglob("*") if p.is_file())


def fresh(root: Path, name: str, logs: Path, toml: str = "") -> Home:
    home = Home.resolve(root / name)
    shutil.copytree(logs / "inbox", home.inbox, dirs_exist_ok=True)
    (home.root / "dmn.toml").write_text(toml)
    return home


def rows(home: Home) -> tuple[int, ...]:
    return tuple(Store(home).sql(f"SELECT count(*) FROM {t}").fetchone()[0]
                 for t in ("episodes", "decisions", "simulations", "quarantine"))


def night(home: Home, now: float, engine: str) -> tuple[float, Consolidation, tuple]:
    """Consolidate `home` at `now`: (seconds, the night, what its bundle holds)."""
    started = time.perf_counter()
    [done] = consolidate(home, now=now, engine=engine)
    seconds = time.perf_counter() - started
    assert done.status == "published", f"{engine}: {done.status} {done.reason}"
    made = load(home, done.world)
    return seconds, done, (made.table.to_pylist(), made.manifest["thresholds"], made.manifest["metrics"])


def policy_rate(home: Home, now: float) -> float:
    """The policy's training, in seconds per step and epoch: three epochs on the night's own training steps."""
    s = ConsolidateSettings(policy_epochs=3)
    [(world, encoder)] = Store(home).sql("SELECT DISTINCT world, encoder FROM decisions").fetchall()
    exp = Window(Store(home), world, encoder, s, now).experience()
    parts = split(exp, s)
    started = time.perf_counter()
    train_policy(exp, parts.train, parts.validation, np.zeros(len(parts.validation)), s)
    return (time.perf_counter() - started) / (3 * len(parts.train))


def fits(train: int, dim: int, per_step: float) -> dict[str, float]:
    """Seconds of the driver's fits for a night of `train` training steps (the model in the docstring)."""
    s, rng = ConsolidateSettings(), np.random.default_rng(0)
    k = situation_count(train)
    k_run = k // 4 if k > 64 else k
    rows = min(train, POINTS_PER_CENTROID * k_run)
    started = time.perf_counter()
    centroids = kmeans(rng.standard_normal((rows, dim), dtype=np.float32), k_run)
    seconds = {"k-means": (time.perf_counter() - started) * (min(train, POINTS_PER_CENTROID * k) * k) / (rows * k_run)}
    started = time.perf_counter()
    centroid_index(centroids, rng.standard_normal((min(train, PCA_SAMPLE), dim), dtype=np.float32), s.pca_dims)
    seconds["pca"] = time.perf_counter() - started
    seconds["policy"] = per_step * min(train, s.policy_sample) * s.policy_epochs
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=16, help="log files (days of the synthetic world)")
    parser.add_argument("--dim", type=int, default=1408, help="latent size")
    parser.add_argument("--workers", type=int, nargs="+", default=[10, 100, 1000],
                        help="cluster sizes to project to, in workers (a CPU each)")
    args = parser.parse_args()
    from ray.cluster_utils import Cluster

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        size = make_logs(root / "logs", args.files, args.dim)
        local = fresh(root, "local", root / "logs")
        started = time.perf_counter()
        done = ingest(local)
        local_seconds = time.perf_counter() - started
        records = sum(done.records.values())
        expected = rows(local)
        now = time.time()
        consolidate(local, now=now, dry_run=True)  # imports and first calls paid here, not by the timed nights
        local_night, done, expected_bundle = night(local, now, "local")
        local_stages, steps, train = done.seconds, done.counts["steps"], done.counts["train"]
        per_step = policy_rate(local, now)
        print(f"{args.files} files, {size / 2**20:,.1f} MiB, {records:,} records ({args.dim}-d latents), "
              f"{steps:,} steps a night")
        print(f"{'engine':<20} {'ingest s':>8} {'MiB/s':>7} {'night s':>8} {'read s':>7}   ingest stages (seconds)")
        print(f"{'local':<20} {local_seconds:8.2f} {size / 2**20 / local_seconds:7.1f} {local_night:8.2f} "
              f"{local_stages['select']:7.2f}")
        measured, nights = {}, {}
        for workers in (1, 2):
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the driver's node
            for _ in range(workers):
                cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            home = fresh(root, f"ray{workers}", root / "logs",
                         f'[engine]\nkind = "ray"\naddress = "{cluster.address}"\nshard_mib = {max(1, size // 2**20 // (4 * workers))}\n')
            started = time.perf_counter()
            report = ingest(home)
            seconds = time.perf_counter() - started
            night_seconds, done, bundle = night(home, now, "ray")
            nights[workers] = done.seconds
            cluster.shutdown()
            assert rows(home) == expected, f"Ray with {workers} workers wrote other rows than the local engine"
            assert bundle == expected_bundle, f"Ray with {workers} workers made another bundle than the local engine"
            measured[workers] = report.stages
            stages = ", ".join(f"{k} {v:.2f}" for k, v in report.stages.items())
            print(f"{f'ray, {workers} worker' + 's' * (workers > 1):<20} {seconds:8.2f} {size / 2**20 / seconds:7.1f} "
                  f"{night_seconds:8.2f} {nights[workers]['select']:7.2f}   {stages}")
    # per worker, from the 1-worker run (the 2-worker run on this machine shares its cores)
    rates = {s: size / measured[1][s] for s in TASK_STAGES if measured[1].get(s)}
    driver = sum(measured[1].get(s, 0) for s in DRIVER_STAGES)
    print(f"\nper worker: {', '.join(f'{s} {r / 2**20:.1f} MiB/s' for s, r in rates.items())}; "
          f"driver {driver:.2f} s ({', '.join(f'{s} {measured[1].get(s, 0):.2f}' for s in DRIVER_STAGES)})")
    print(f"2 workers against 1, same machine: tasks {sum(measured[2].get(s, 0) for s in TASK_STAGES):.2f} s "
          f"against {sum(measured[1].get(s, 0) for s in TASK_STAGES):.2f} s")
    per_record = size / records
    fleet = (FLEET_DECISIONS + FLEET_SIMULATIONS) * per_record
    print(f"\nthe fleet's night: {FLEET_DECISIONS / 1e6:.0f} M decisions + {FLEET_SIMULATIONS / 1e6:.0f} M simulations "
          f"at {per_record / 1024:.1f} KiB a record (as measured here) = {fleet / 2**40:.1f} TiB")
    print("model: T(N) = driver + sum over parse, tally, resolve of bytes / (N workers x rate per worker); the "
          "driver's plan and commit as measured here per file, for 1,000 files (one a robot)")
    plan_per_file = measured[1].get("plan", 0) / args.files
    commit_per_file = measured[1].get("commit", 0) / args.files
    for n in args.workers:
        tasks = sum(fleet / (n * r) for r in rates.values())
        fixed = measured[1].get("connect", 0) + 1000 * (plan_per_file + commit_per_file)
        print(f"  {n:>5} workers: {(tasks + fixed) / 3600:8.2f} h  (tasks {tasks / 3600:.2f} h, driver {fixed:.0f} s)")
    one = nights[1]
    for name, stages in (("local", local_stages), ("ray, 1 worker", one)):
        print(f"the night's stages, {name}: {', '.join(f'{k} {v:.2f}' for k, v in stages.items())} s")
    tasks = {stage: steps / one[stage] for stage in ("select", "mapped", "outcomes")}  # steps/s per worker
    driver = sum(one[s] for s in NIGHT_STAGES) - one["mapped"] - one["outcomes"]
    here = fits(train, args.dim, per_step)
    here["policy"] = one["policy"]  # as trained, stopped early, rather than its bound
    rest = max(0.0, driver - sum(here.values())) / steps  # seconds a step
    fleet_steps = ConsolidateSettings().max_decisions
    fleet_train = round(fleet_steps * train / steps)
    there = fits(fleet_train, args.dim, per_step)
    print(f"\nthe night on 1 worker: per worker, read {tasks['select']:,.0f} steps/s, mapped {tasks['mapped']:,.0f} "
          f"steps/s, outcomes {tasks['outcomes']:,.0f} steps/s (tasks); the driver {driver:.2f} s, of which fits "
          f"{', '.join(f'{k} {v:.2f}' for k, v in here.items())} s and the rest {rest * 1e3:.2f} ms a step")
    print(f"the driver's fits at the fleet's night ({fleet_steps:,} steps, {fleet_train:,} training): "
          f"{', '.join(f'{k} {v:.0f}' for k, v in there.items())} s (the policy's for all {ConsolidateSettings().policy_epochs} "
          f"epochs, {per_step * 1e6:.0f} µs a step and epoch)")
    print("model: T(N) = steps x (1/read + 1/mapped + 1/outcomes) / N + the fits + steps x the rest")
    for n in args.workers:
        spread = sum(fleet_steps / (n * r) for r in tasks.values())
        stays = sum(there.values()) + fleet_steps * rest
        print(f"  {n:>5} workers: {(spread + stays) / 3600:8.2f} h  (tasks {spread / 60:.1f} min, driver {stays / 60:.1f} min)")


if __name__ == "__main__":
    main()
