"""Kill it and read it while it writes: nothing lost, nothing duplicated, never half a bundle."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import numpy as np

from dmn import Home, publish
from dmn.bundle import load
from dmn.store import Store
from dmn.synthetic import write_logs

FAST_TOML = "[consolidate]\npolicy_hidden = 16\npolicy_epochs = 5\n"


def check_home(home: Home, world: str) -> tuple[int, int]:
    """The invariants that must hold after any kill: the catalog opens, no record is there twice, and
    the published pointer names a complete bundle whose checksums verify. Returns (decisions, simulations)."""
    store = Store(home)
    decisions, keys = store.sql("SELECT count(*), count(DISTINCT (episode_id, step)) FROM decisions").fetchone()
    assert decisions == keys, "a decision was ingested twice"
    simulations = store.sql("SELECT count(*) FROM simulations").fetchone()[0]
    episodes, distinct = store.sql("SELECT count(*), count(DISTINCT episode_id) FROM episodes").fetchone()
    assert episodes == distinct, "an episode was ingested twice"
    version = publish.current(home, world)
    if version is not None:
        publish.verify(publish.folder(home, world) / version)
    return decisions, simulations


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
