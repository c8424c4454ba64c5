"""The Ray engine on a real cluster of three nodes on this machine (`ray.cluster_utils.Cluster`, nothing
mocked): from the same logs, bad ones included, the same lake and quarantine as the local engine, and the
same bundle; a node lost in the middle of an ingest and of a night; a cluster that cannot be reached. Skipped
where Ray is not installed (`pip install 'dmn[ray]'`), unless DMN_REQUIRE_TOOLS=1 (CI), where that fails."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import decision, dmn, episode, simulation, write_jsonl

from dmn.bundle.load import load
from dmn.errors import DmnError
from dmn.home import Home
from dmn.lake.ingest import ingest
from dmn.lake.store import Store
from dmn.ops.status import check
from dmn.records import LAKE_TABLES, columns
from dmn.sleep.night import consolidate
from dmn.worlds.synthetic import write_logs, write_vector_logs

if os.environ.get("DMN_REQUIRE_TOOLS") != "1":
    pytest.importorskip("ray")


def lake(home: Home) -> dict[str, list[tuple]]:
    """Every lake table's rows, but for the batch that wrote them and when."""
    out = {}
    for table in LAKE_TABLES:
        cols = ", ".join(f'"{c}"' for c in columns(table) if c not in ("batch", "ingested_at"))
        out[table] = Store(home).sql(f"SELECT {cols} FROM {table} ORDER BY ALL").fetchall()
    return out


def logs(inbox: Path, day: int) -> None:
    """A day of a synthetic world, the ingest suite's bad records and bad files, and repeats of yesterday."""
    from lar_agent import run_agent
    from test_ingest import BAD

    write_logs(Home.resolve(inbox.parent), situations=4, dim=16, episodes=12, steps=10, day=day)
    write_jsonl(inbox / f"bad{day}.jsonl", [episode(f"w{day}"), simulation(f"w{day}", step=0),
                                           *[line for line, _ in BAD], decision(f"w{day}", step=0)])
    if day:  # repeats of the lake's records, the same and conflicting
        write_jsonl(inbox / f"again{day}.jsonl", [episode("w0"), decision("w0", step=0),
                                                  decision("w0", step=0, action=3), simulation("w0", step=0)])
    (inbox / f"broken{day}.jsonl.gz").write_bytes(gzip.compress(b'{"type": "episode"}\n' * 500)[:40])
    cut = inbox / f"cut{day}.jsonl"
    cut.write_text(json.dumps(episode(f"c{day}")) + "\n" + json.dumps(simulation(f"c{day}"))[:30])
    os.utime(cut, (time.time() - 7200, time.time() - 7200))  # its writer is long gone
    run_agent(inbox / f"lar{day}", runs=2, steps=2)


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    started = time.perf_counter()
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    print(f"cluster of three nodes up in {time.perf_counter() - started:.1f} s")
    yield nodes
    nodes.shutdown()


def on_ray(home: Home, address: str, night: str = "", **settings: int) -> None:
    extra = "".join(f"{k} = {v}\n" for k, v in settings.items())
    (home.root / "dmn.toml").write_text(f'[engine]\nkind = "ray"\naddress = "{address}"\n{extra}{night}')


def test_ray_ingest_writes_what_the_local_engine_writes_and_survives_a_lost_node(cluster, tmp_path):
    """Two days of logs, bad ones included, ingested by each engine into its own home: the same rows in every
    table and in quarantine, with the same reasons; then a worker node is removed while an ingest runs, and
    that run or the next holds every record once."""
    local, remote = Home.resolve(tmp_path / "local"), Home.resolve(tmp_path / "ray")
    on_ray(remote, cluster.address, shard_mib=1, key_shards=3)
    for day in range(2):
        logs(tmp_path / "logs" / "inbox", day)
        for home in (local, remote):
            shutil.copytree(tmp_path / "logs" / "inbox", home.inbox, dirs_exist_ok=True)
        here, there = ingest(local), ingest(remote)
        assert (there.records, there.quarantined, there.duplicates) == (here.records, here.quarantined, here.duplicates)
        assert lake(remote) == lake(local) and check(remote)["problems"] == []
    assert len(Store(remote).manifests()) == 2 and lake(local)["quarantine"]

    lost = Home.resolve(tmp_path / "lost")
    on_ray(lost, cluster.address, shard_mib=1, key_shards=2)
    for i in range(8):  # eight files of a few MB: a parse task each, long enough to lose a node under
        write_logs(lost, situations=4, dim=256, episodes=10, steps=40, day=i)
    expected = Home.resolve(tmp_path / "expected")
    shutil.copytree(lost.inbox, expected.inbox, dirs_exist_ok=True)
    ingest(expected)
    run = subprocess.Popen([sys.executable, "-m", "dmn", "ingest", "--json", "--home", str(lost.root)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(lost.tmp.glob("b*/parsed/p*")) and time.time() < deadline and run.poll() is None:
        time.sleep(0.05)
    worker = next(n for n in cluster.list_all_nodes() if n is not cluster.head_node)
    cluster.remove_node(worker)  # its tasks die with it; Ray runs them again on the nodes left
    out, err = run.communicate(timeout=300)
    if run.returncode:  # the run may fail in one line; the next one starts over
        assert "nothing was committed" in err and len(err.strip().splitlines()) == 1, err
        assert dmn("ingest", home=lost).returncode == 0
    assert lake(lost) == lake(expected) and check(lost)["problems"] == []
    assert not list(lost.tmp.glob("b*"))  # no staging left behind
    cluster.add_node(num_cpus=1)


def bundle(home: Home, world: str) -> tuple:
    """What a published bundle holds, but for when and by which run it was made."""
    made = load(home, world)
    return (made.table.to_pylist(), made.outcomes.to_pylist(), made.manifest["thresholds"], made.manifest["metrics"],
            made.manifest["window"], {k: v.tolist() for k, v in made.policy.items()})


def working(task: str) -> bool:
    """Whether a Ray worker on this machine is running `task` now (Ray titles a worker's process after it)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(f"ray::{task}".encode()):
                return True
        except OSError:
            continue
    return False


def test_the_night_on_ray_makes_the_local_engines_bundle_and_survives_a_lost_node(cluster, tmp_path):
    """Two days of logs (the bad ones of the ingest test, a world with ties, a world of vector actions),
    consolidated by each engine from its own copy of the lake at the same moment: every world's night ends the
    same, and each published bundle is the same (table, outcome types, thresholds, held-out figures, policy
    weights); then a worker node is removed while tasks put together or map over the night's states, which
    stay on the cluster (those the node held are lost with it, and Ray makes them again from the tasks that
    read them), and that night or the next publishes the same."""
    inbox = tmp_path / "logs" / "inbox"
    for day in range(2):
        logs(inbox, day)
        write_logs(Home.resolve(inbox.parent), world="tied", situations=6, dim=32, episodes=30, steps=10,
                   accuracy=1.0, ties=0.5, day=day)
        write_vector_logs(Home.resolve(inbox.parent), world="arm", situations=4, action_dim=3, dim=32, episodes=30,
                          steps=10, day=day)
    homes = {name: Home.resolve(tmp_path / name) for name in ("local", "ray", "lost")}
    for home in homes.values():
        shutil.copytree(inbox, home.inbox, dirs_exist_ok=True)
        ingest(home, engine="local")
    night = "[consolidate]\nblock_rows = 16\n"  # small blocks: these small nights' states in several ranges
    (homes["local"].root / "dmn.toml").write_text(night)
    on_ray(homes["ray"], cluster.address, night, key_shards=3)
    on_ray(homes["lost"], cluster.address, night, key_shards=12)
    now = time.time()
    here, there = consolidate(homes["local"], now=now), consolidate(homes["ray"], now=now)
    assert [(n.world, n.status, n.reason, n.counts) for n in there] == [(n.world, n.status, n.reason, n.counts)
                                                                      for n in here]
    published = [n.world for n in here if n.status == "published"]
    assert {"tied", "synthetic", "arm"} <= set(published)
    for world in published:
        assert bundle(homes["ray"], world) == bundle(homes["local"], world), world

    worker = next(n for n in cluster.list_all_nodes() if n is not cluster.head_node)

    ended, removed = threading.Event(), []

    def lose_a_node() -> None:
        while not ended.is_set():
            if working("_range") or working("_apply"):  # a task putting together, or mapping over, held states
                cluster.remove_node(worker)  # its tasks die with it; Ray runs them again on the nodes left
                removed.append(worker)
                return
            time.sleep(0.01)

    loser = threading.Thread(target=lose_a_node)
    loser.start()
    try:
        nights = consolidate(homes["lost"], now=now)
    finally:
        ended.set()
        loser.join()
    assert removed, "no task of the night was caught running"
    print("that night, a worker node removed while tasks held its states:", [(n.world, n.status) for n in nights])
    if any(n.status == "failed" and n.reason.startswith("the night stopped") for n in nights):
        assert all("\n" not in n.reason for n in nights)  # it failed in one line; the next one reads again
        nights = consolidate(homes["lost"], now=now)
    assert [(n.world, n.status, n.counts) for n in nights] == [(n.world, n.status, n.counts) for n in here]
    for world in published:
        assert bundle(homes["lost"], world) == bundle(homes["local"], world), world
    assert check(homes["lost"])["problems"] == []
    cluster.add_node(num_cpus=1)


def test_an_unreachable_cluster_is_one_line_and_changes_nothing(home):
    write_jsonl(home.inbox / "day.jsonl", [episode("e1"), decision("e1", step=0)])
    on_ray(home, "127.0.0.1:9")
    started = time.perf_counter()
    done = dmn("ingest", home=home)
    assert done.returncode == 1 and time.perf_counter() - started < 60
    assert done.stderr.strip().splitlines() == ["error: cannot reach the Ray cluster at 127.0.0.1:9 (Connection "
                                                "refused); nothing was changed"]
    assert Store(home).manifests() == [] and (home.inbox / "day.jsonl").exists()
    (home.root / "dmn.toml").write_text('[engine]\nkind = "ray"\n')
    done = dmn("ingest", home=home, env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert done.returncode == 1 and "RAY_ADDRESS" in done.stderr and Store(home).manifests() == []
    ingest(home, engine="local")  # the night, on a lake the local engine filled
    on_ray(home, "127.0.0.1:9")
    with pytest.raises(DmnError, match=r"^cannot reach the Ray cluster at 127.0.0.1:9 .*nothing was changed$"):
        consolidate(home)
    assert not home.runs.exists() or not any(home.runs.iterdir())


def test_the_local_engine_never_imports_ray(tmp_path):
    """The default install has no Ray; the local engine's ingest and night must not need it."""
    code = ("import sys; from dmn.home import Home; from dmn.ops.jobs import run, nightly; "
            "from dmn.worlds.synthetic import write_logs; "
            f"h = Home.resolve({str(tmp_path / 'home')!r}); write_logs(h, situations=4, dim=16, episodes=10, steps=10); "
            "run(h, nightly()); assert 'ray' not in sys.modules, 'ray was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
