"""Kill it and read it while it writes: nothing lost, nothing duplicated, never half a bundle."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dmn import Home, publish
from dmn.bundle import load
from dmn.faults import POINTS
from dmn.status import check
from dmn.store import Store
from dmn.synthetic import write_logs

FAST_TOML = "[consolidate]\npolicy_hidden = 16\npolicy_epochs = 5\n"


def check_home(home: Home, world: str) -> tuple[int, int]:
    """The invariants that must hold after any kill (`dmn.status.check`): the catalog opens, no record is
    there twice, and the published pointer names a complete bundle whose checksums verify.
    Returns (decisions, simulations)."""
    result = check(home)
    assert result["problems"] == []
    if publish.current(home, world) is not None:
        assert world in result["published"]
    return result.get("decisions", 0), result.get("simulations", 0)


def consolidate_killed_at(home: Home, point: str, command: str = "consolidate") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dmn", command, "--home", str(home.root)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "DMN_KILL_AT": point})


def test_sigkill_at_every_kill_point_of_ingest_consolidation_and_publish(tmp_path):
    """Every named kill point (dmn.faults) once, each after a new day of logs, in `dmn ingest` or
    `dmn consolidate`: after each the home is whole; a last night then holds exactly what was logged,
    and leaves no staging behind."""
    home = Home.resolve(tmp_path / "home")
    (home.root / "dmn.toml").write_text(FAST_TOML + "keep = 2\n")
    points = [(p, "ingest" if p.startswith("ingest.") else "consolidate") for p in POINTS]
    # write_atomic's passes in a night: the batch manifest, the bundle manifest, CURRENT, the run record
    points += [(f"atomic.written:{n}", "consolidate") for n in (2, 3, 4)] + [("ingest.rolled:3", "consolidate")]
    # the first publishes come first, so that later kills always have a bundle and old ones to prune
    points.sort(key=lambda p: not p[0].startswith(("publish.switched", "publish.placed", "consolidate.publish")))
    logged = 0
    for day, (point, command) in enumerate(points):
        write_logs(home, situations=4, dim=32, episodes=8, steps=20, accuracy=1.0, day=day)
        logged += 8 * 20
        killed = consolidate_killed_at(home, point, command)
        assert killed.returncode == -signal.SIGKILL, f"{point} was never reached: {killed.stderr[-400:]}"
        decisions, _ = check_home(home, "synthetic")
        assert decisions <= logged
    assert len(points) >= 20
    done = subprocess.run([sys.executable, "-m", "dmn", "consolidate", "--home", str(home.root)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert check_home(home, "synthetic") == (logged, logged * 3)
    assert publish.current(home, "synthetic") is not None
    assert list(home.tmp.glob("b*")) == []  # no batch or bundle staging left behind
    assert list(publish.folder(home, "synthetic").glob(".*")) == []


def test_sigkilled_nights_lose_and_duplicate_nothing(tmp_path):
    """Seeded SIGKILLs at random moments of `dmn consolidate` (its ingest, its stages, its publish), each
    after new logs arrived; then one run to completion must hold exactly what the agents logged."""
    home = Home.resolve(tmp_path / "home")
    (home.root / "dmn.toml").write_text(FAST_TOML)
    rng = random.Random(7)
    expected_decisions = expected_simulations = 0
    killed_running = 0
    for round_ in range(10):
        write_logs(home, situations=4, dim=32, episodes=8, steps=20, accuracy=1.0, day=round_)
        expected_decisions += 8 * 20
        expected_simulations += 8 * 20 * 3
        night = subprocess.Popen([sys.executable, "-m", "dmn", "consolidate", "--home", str(home.root)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.3, 6.0))
        killed_running += night.poll() is None
        night.send_signal(signal.SIGKILL)
        night.wait()
        decisions, simulations = check_home(home, "synthetic")
        assert decisions <= expected_decisions and simulations <= expected_simulations
    assert killed_running >= 5, f"only {killed_running} of 10 kills caught the night running"
    done = subprocess.run([sys.executable, "-m", "dmn", "consolidate", "--home", str(home.root)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert check_home(home, "synthetic") == (expected_decisions, expected_simulations)
    assert publish.current(home, "synthetic") is not None


READER = """
import json, sys, time
import numpy as np
import pytest
from dmn import Reflexes
reflexes = Reflexes.open(sys.argv[1], "synthetic", check_every=0.02)
states = np.load(sys.argv[2])
seen, errors, deadline = [], [], time.monotonic() + float(sys.argv[3])
i = 0
while time.monotonic() < deadline:
    try:
        r = reflexes.lookup(states[i % len(states)])
        seen.append([i % len(states), None if r is None else [r.version, r.action, r.source]])
    except Exception as exc:
        errors.append(repr(exc))
    i += 1
print(json.dumps({"seen": seen[::max(1, len(seen) // 400)], "lookups": len(seen), "errors": errors}))
"""


def test_reader_processes_see_whole_bundles_while_bundles_are_published(tmp_path):
    """Four processes look up while twelve bundles are published: no error, and every answer is exactly
    what the one bundle it names says."""
    home = Home.resolve(tmp_path / "home")
    (home.root / "dmn.toml").write_text(FAST_TOML)
    truth = write_logs(home, situations=4, dim=32, episodes=30, steps=20, accuracy=1.0)
    assert subprocess.run([sys.executable, "-m", "dmn", "consolidate", "--home", str(home.root)],
                          capture_output=True, timeout=300).returncode == 0
    np.save(tmp_path / "states.npy", truth.sample(64)[0])
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(home.root), str(tmp_path / "states.npy"), "8"],
                                stdout=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(2)  # let them start
    base = publish.folder(home, "synthetic") / "v000001"
    manifest = json.loads((base / "manifest.json").read_text())
    files = {name: (base / name).read_bytes() for name in manifest["files"]}
    kept = {k: v for k, v in manifest.items() if k not in ("files", "version", "format", "world", "signature")}
    for n in range(12):  # alternately a bundle that answers and one that never does
        thresholds = manifest["thresholds"] if n % 2 else {"table": None, "policy": 1.01}
        publish.publish(home, "synthetic", files, {**kept, "thresholds": thresholds}, keep=100)
        time.sleep(0.3)
    results = [json.loads(r.communicate(timeout=60)[0]) for r in readers]
    states = np.load(tmp_path / "states.npy")
    bundles = {}
    for result in results:
        assert result["errors"] == [] and result["lookups"] > 100
        for i, answer in result["seen"]:
            if answer is None:
                continue
            version, action, source = answer
            bundle = bundles.setdefault(version, load(home, "synthetic", version))
            expected = bundle.answer(states[i:i + 1])
            assert (action, source) == (bundle.actions[expected.action[0]], expected.source[0]), version
    assert len(bundles) >= 3  # the readers saw the bundles change under them


def test_a_night_over_every_kind_of_bad_input_finishes_and_keeps_every_good_record(tmp_path):
    """All the bad records of the ingest suite in one file, bad files beside it, and a good world: the
    night publishes, each bad record is in quarantine with its reason, every good one landed."""
    import gzip
    from collections import Counter

    from conftest import decision, episode, simulation, write_jsonl
    from test_ingest import BAD

    home = Home.resolve(tmp_path / "home")
    (home.root / "dmn.toml").write_text(FAST_TOML)
    write_logs(home, situations=4, dim=32, episodes=30, steps=20, accuracy=1.0)
    write_jsonl(home.inbox / "bad.jsonl", [episode(), simulation(step=0), *[line for line, _ in BAD],
                                           decision(step=0), simulation(step=1)])
    (home.inbox / "zero.jsonl").write_bytes(b"")
    (home.inbox / "broken.jsonl.gz").write_bytes(gzip.compress(b'{"type": "episode"}\n' * 500)[:40])
    (home.inbox / "writing.jsonl.tmp").write_text("{}\n")
    outside = write_jsonl(tmp_path / "elsewhere.jsonl", [episode("e7")])
    (home.inbox / "link.jsonl").symlink_to(outside)
    (home.inbox / "run_bad.json").write_bytes(b'{"run_id": "x"}')
    night = subprocess.run([sys.executable, "-m", "dmn", "consolidate", "--world", "synthetic", "--json", "--home",
                            str(home.root)], capture_output=True, text=True, timeout=300)
    assert night.returncode == 0, night.stderr
    assert json.loads(night.stdout.splitlines()[0])["status"] == "published"
    store = Store(home)
    quarantined = Counter(dict(store.sql("SELECT reason, count(*) FROM quarantine GROUP BY reason").fetchall()))
    expected = Counter(reason for _, reason in BAD if reason != "duplicate")
    expected.update({"corrupt gzip file": 1, "not a Lár audit file": 1})
    assert quarantined == expected
    assert store.sql("SELECT count(*) FROM quarantine WHERE hint IS NULL OR hint = ''").fetchone()[0] == 0
    assert store.sql("SELECT count(*) FROM decisions WHERE world = 'w'").fetchone()[0] == 1
    assert store.sql("SELECT count(*) FROM simulations WHERE world = 'w'").fetchone()[0] == 2
    assert store.sql("SELECT count(*) FROM episodes WHERE episode_id = 'e7'").fetchone()[0] == 0  # not followed
    check_home(home, "synthetic")


def test_sql_answers_while_nights_ingest_and_publish(tmp_path):
    """`dmn sql` during consolidations (which ingest first): every query answers, and sees whole batches."""
    home = Home.resolve(tmp_path / "home")
    (home.root / "dmn.toml").write_text(FAST_TOML)
    per_day = 8 * 20
    answers = []
    for day in range(3):
        write_logs(home, situations=4, dim=32, episodes=8, steps=20, accuracy=1.0, day=day)
        night = subprocess.Popen([sys.executable, "-m", "dmn", "consolidate", "--home", str(home.root)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while night.poll() is None:
            query = subprocess.run([sys.executable, "-m", "dmn", "sql", "SELECT count(*) AS n FROM decisions",
                                    "--format", "json", "--home", str(home.root)], capture_output=True, text=True)
            assert query.returncode == 0, query.stderr
            answers.append(json.loads(query.stdout)["n"])
        assert night.returncode == 0, night.stderr.read()
    assert len(answers) >= 3 and all(n % per_day == 0 for n in answers)  # whole days only, never a part
    assert Store(home).sql("SELECT count(*) FROM decisions").fetchone()[0] == 3 * per_day


def test_dmn_check_finds_a_lost_lake_file_a_record_twice_and_a_damaged_bundle(tmp_path):
    """The check the crash tests rely on must fail when the home is not whole."""
    home = Home.resolve(tmp_path / "home")
    (home.root / "dmn.toml").write_text(FAST_TOML)
    write_logs(home, situations=4, dim=32, episodes=30, steps=20, accuracy=1.0)
    dmn = [sys.executable, "-m", "dmn"]
    assert subprocess.run([*dmn, "consolidate", "--home", str(home.root)], capture_output=True).returncode == 0
    ok = subprocess.run([*dmn, "check", "--home", str(home.root)], capture_output=True, text=True)
    assert ok.returncode == 0 and "600 decisions" in ok.stdout and "synthetic v000001" in ok.stdout

    store = Store(home)
    decisions = store.files("decisions")
    manifest = json.loads(next(home.catalog.glob("*.json")).read_text())
    twice = {**manifest, "batch": "b20260101T000000000000Z000000", "ledger": [],
             "files": {"decisions": [str(Path(decisions[0]).relative_to(home.lake))]}}
    (home.catalog / "b20260101T000000000000Z000000.json").write_text(json.dumps(twice))  # its file listed twice
    assert any("decisions are there twice" in p for p in check(home)["problems"])

    Path(store.files("simulations")[0]).unlink()  # a lost lake file
    (publish.folder(home, "synthetic") / "v000001" / "policy.npz").write_bytes(b"x")  # a damaged bundle
    found = subprocess.run([*dmn, "check", "--home", str(home.root)], capture_output=True, text=True)
    assert found.returncode == 1
    assert "is unreadable" in found.stderr and "does not match its checksum" in found.stderr


def test_an_ingest_leaves_a_bundle_being_published_alone_and_rollback_waits_for_a_publish(tmp_path, monkeypatch):
    """Ingest recovers crashed batches in tmp/, where a night also stages its bundle: it must only touch
    batches. Rollback and publish share a lock, so CURRENT never names a bundle a publish is pruning."""
    from dmn.errors import Busy
    from dmn.ingest import ingest

    home = Home.resolve(tmp_path / "home")
    staging = home.tmp / f"{publish.STAGING_PREFIX}0123"
    staging.mkdir()
    (staging / "table.parquet").write_bytes(b"being written")
    write_logs(home, situations=4, dim=32, episodes=2, steps=5, accuracy=1.0)
    assert ingest(home).batch is not None
    assert (staging / "table.parquet").exists()

    monkeypatch.setattr(publish, "LOCK_WAIT", 0.2)
    with home.lock("publish"):
        with pytest.raises(Busy):
            publish.rollback(home, "synthetic")
        with pytest.raises(Busy):
            publish.publish(home, "synthetic", {}, {}, keep=2)
