"""Kill it and read it while it writes: nothing lost, nothing duplicated, never half a bundle."""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import dmn, republish
from dmn import Home
from dmn.bundle import publish
from dmn.bundle.load import load
from dmn.faults import POINTS
from dmn.ops.status import check
from dmn.lake.store import Store
from dmn.worlds.synthetic import big_log, write_logs

FAST_TOML = "[consolidate]\npolicy_hidden = 16\npolicy_epochs = 20\n"


def check_home(home: Home, world: str) -> tuple[int, int]:
    """The invariants that must hold after any kill (`dmn.ops.status.check`): the catalog opens, no record is
    there twice, and the published pointer names a complete bundle whose checksums verify.
    Returns (decisions, simulations)."""
    result = check(home)
    assert result["problems"] == []
    if publish.current(home, world) is not None:
        assert world in result["published"]
    return result.get("decisions", 0), result.get("simulations", 0)


def test_sigkill_at_every_kill_point_of_ingest_consolidation_and_publish(tmp_path):
    """Every named kill point (dmn.faults) once, each after a new day of logs, in `dmn ingest` or
    `dmn consolidate`: after each the home is whole; a last night then holds exactly what was logged,
    and leaves no staging behind."""
    home = Home.resolve(tmp_path / "home")
    (home.root / "dmn.toml").write_text(FAST_TOML + "keep = 2\n[ingest]\ncompact_batches = 2\n")  # compact every day
    points = [(p, "ingest" if p.startswith(("ingest.", "compact.")) else "consolidate") for p in POINTS]
    # write_atomic's passes in a night: the batch manifest, the bundle manifest, CURRENT, the run record
    points += [(f"atomic.written:{n}", "consolidate") for n in (2, 3, 4)] + [("ingest.rolled:3", "consolidate")]
    # the first publishes come first, so that later kills always have a bundle and old ones to prune
    points.sort(key=lambda p: not p[0].startswith(("publish.switched", "publish.placed", "consolidate.publish")))
    logged = 0
    for day, (point, command) in enumerate(points):
        write_logs(home, situations=4, dim=32, episodes=8, steps=20, accuracy=1.0, day=day)
        logged += 8 * 20
        killed = dmn(command, env={**os.environ, "DMN_KILL_AT": point}, home=home)
        assert killed.returncode == -signal.SIGKILL, f"{point} was never reached: {killed.stderr[-400:]}"
        decisions, _ = check_home(home, "synthetic")
        assert decisions <= logged
    assert len(points) >= 20
    done = dmn("consolidate", home=home, timeout=300)
    assert done.returncode == 0, done.stderr
    assert check_home(home, "synthetic") == (logged, logged * 3)
    assert publish.current(home, "synthetic") is not None
    assert list(home.tmp.glob("b*")) == []  # no batch or bundle staging left behind
    assert list(publish.folder(home, "synthetic").glob(".*")) == []


def test_sigkilled_nights_lose_and_duplicate_nothing(tmp_path):
    """`dmn consolidate` SIGKILLed at kill points drawn at random (seeded; a point's first, second or third
    pass), each after new logs arrived, so that kills pile up on what earlier ones left; then one run to
    completion must hold exactly what the agents logged."""
    home = Home.resolve(tmp_path / "home")
    (home.root / "dmn.toml").write_text(FAST_TOML + "[ingest]\ncompact_batches = 2\n")  # compaction's points too
    rng = random.Random(132)  # a draw whose kills mostly fall on points every night passes
    expected_decisions = expected_simulations = 0
    killed_running = 0
    for round_ in range(6):
        write_logs(home, situations=4, dim=32, episodes=8, steps=20, accuracy=1.0, day=round_)
        expected_decisions += 8 * 20
        expected_simulations += 8 * 20 * 3
        point = f"{rng.choice(sorted(POINTS))}:{rng.randint(1, 3)}"
        night = dmn("consolidate", env={**os.environ, "DMN_KILL_AT": point}, home=home)
        killed_running += night.returncode == -signal.SIGKILL
        decisions, simulations = check_home(home, "synthetic")
        assert decisions <= expected_decisions and simulations <= expected_simulations
    assert killed_running >= 3, f"only {killed_running} of 6 kills caught the night running"
    done = dmn("consolidate", home=home, timeout=300)
    assert done.returncode == 0, done.stderr
    assert check_home(home, "synthetic") == (expected_decisions, expected_simulations)
    assert publish.current(home, "synthetic") is not None


READER = """
import json, sys, threading
import numpy as np
from dmn import Reflexes
reflexes = Reflexes.open("synthetic", home=sys.argv[1], encoder="synthetic@1", check_every=0.02)
states = np.load(sys.argv[2])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()  # until stdin closes
seen, errors, serving, i = [], [], None, 0
while not stop.is_set():
    try:
        r = reflexes.lookup(states[i % len(states)])
        seen.append([i % len(states), None if r is None else [r.version, r.action, r.source]])
    except Exception as exc:
        errors.append(repr(exc))
    if reflexes.version != serving:  # the parent waits for every reader to serve each new bundle
        serving = reflexes.version
        print(json.dumps({"serving": serving}), flush=True)
    i += 1
print(json.dumps({"seen": seen[::max(1, len(seen) // 400)], "lookups": len(seen), "errors": errors}), flush=True)
"""


def test_reader_processes_see_whole_bundles_while_bundles_are_published(tmp_path):
    """Four processes look up while twelve bundles are published, each served by every reader before the
    next: no error, and every answer is exactly what the one bundle it names says."""
    import threading

    home = Home.resolve(tmp_path / "home")
    (home.root / "dmn.toml").write_text(FAST_TOML)
    truth = write_logs(home, situations=4, dim=32, episodes=30, steps=20, accuracy=1.0)
    assert dmn("consolidate", home=home, timeout=300).returncode == 0
    np.save(tmp_path / "states.npy", truth.sample(64)[0])
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(home.root), str(tmp_path / "states.npy")],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    serving: list[set] = [set() for _ in readers]
    results: list[dict] = [{} for _ in readers]

    def listen(i: int) -> None:
        for line in readers[i].stdout:
            said = json.loads(line)
            if "serving" in said:
                serving[i].add(said["serving"])
            else:
                results[i].update(said)

    listeners = [threading.Thread(target=listen, args=(i,)) for i in range(len(readers))]
    for t in listeners:
        t.start()

    def served_by_all(version: str) -> bool:
        deadline = time.monotonic() + 30
        while not all(version in s for s in serving) and time.monotonic() < deadline:
            time.sleep(0.01)
        return all(version in s for s in serving)

    assert served_by_all("v000001")
    answering = json.loads((publish.folder(home, "synthetic") / "v000001" / "manifest.json").read_text())["thresholds"]
    for n in range(12):  # alternately a bundle that answers and one that never does
        assert served_by_all(republish(home, thresholds=answering if n % 2 else {"table": None, "policy": 1.01}))
    for reader in readers:
        reader.stdin.close()
    for reader, t in zip(readers, listeners):
        assert reader.wait(timeout=60) == 0
        t.join()
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
            assert (str(action), source) == (bundle.actions[expected.action[0]], expected.source[0]), version
    assert len(bundles) >= 3  # the readers' answers came from bundles that changed under them


def test_a_night_over_every_kind_of_bad_input_finishes_and_keeps_every_good_record(tmp_path):
    """All the bad records of the ingest suite in one file, bad files beside it (a 17 MB line, a file cut
    mid-record, a tampered signed Lár run, ...) and a good world: the night publishes, each bad record is in
    quarantine with its reason, every good one landed."""
    import gzip
    from collections import Counter

    from conftest import decision, episode, simulation, write_jsonl
    from lar_agent import run_agent
    from test_ingest import BAD

    home = Home.resolve(tmp_path / "home")
    (home.root / "dmn.toml").write_text(FAST_TOML)
    write_logs(home, situations=4, dim=32, episodes=30, steps=20, accuracy=1.0)
    write_jsonl(home.inbox / "huge.jsonl", [episode("e8"), simulation("e8", meta="x" * 17_000_000),
                                            simulation("e8", step=1)])
    cut = home.inbox / "cut.jsonl"
    cut.write_text(json.dumps(episode("e9")) + "\n" + json.dumps(simulation("e9"))[:30])
    os.utime(cut, (time.time() - 7200, time.time() - 7200))  # its writer is long gone
    run_agent(home.inbox, runs=2, steps=2, hmac_secret="s3cret")
    signed = sorted(home.inbox.glob("run_*.json"))[1]
    doc = json.loads(signed.read_text())
    doc["steps"][1]["state_diff"]["updated"]["score"] = 99.0  # a score improved after the run was signed
    signed.write_text(json.dumps(doc))
    write_jsonl(home.inbox / "bad.jsonl", [episode(), simulation(step=0), *[line for line, _ in BAD],
                                           decision(step=0), simulation(step=1)])
    (home.inbox / "zero.jsonl").write_bytes(b"")
    (home.inbox / "broken.jsonl.gz").write_bytes(gzip.compress(b'{"type": "episode"}\n' * 500)[:40])
    (home.inbox / "writing.jsonl.tmp").write_text("{}\n")
    outside = write_jsonl(tmp_path / "elsewhere.jsonl", [episode("e7")])
    (home.inbox / "link.jsonl").symlink_to(outside)
    (home.inbox / "run_bad.json").write_bytes(b'{"run_id": "x"}')
    night = dmn("consolidate", "--world", "synthetic", "--json", home=home, timeout=300,
                env={**os.environ, "DMN_LAR_HMAC_SECRET": "s3cret"})
    assert night.returncode == 0, night.stderr
    assert json.loads(night.stdout.splitlines()[0])["status"] == "published"
    store = Store(home)
    quarantined = Counter(dict(store.sql("SELECT reason, count(*) FROM quarantine GROUP BY reason").fetchall()))
    expected = Counter(reason for _, reason in BAD if reason != "duplicate")
    expected.update({"corrupt gzip file": 1, "not a Lár audit file": 1, "line too long": 1, "bad Lár signature": 1,
                     "truncated last line (the file ends in the middle of a record)": 1})
    assert quarantined == expected
    assert store.sql("SELECT count(*) FROM quarantine WHERE hint IS NULL OR hint = ''").fetchone()[0] == 0
    assert store.sql("SELECT count(*) FROM decisions WHERE world = 'w'").fetchone()[0] == 1
    assert store.sql("SELECT count(*) FROM simulations WHERE world = 'w'").fetchone()[0] == 3
    assert store.sql("SELECT count(*) FROM episodes WHERE episode_id IN ('e8', 'e9')").fetchone()[0] == 2
    assert store.sql("SELECT count(*) FROM episodes WHERE world = 'lar'").fetchone()[0] == 1  # the untouched run
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
            query = dmn("sql", "SELECT count(*) AS n FROM decisions", "--format", "json", home=home)
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
    assert dmn("consolidate", home=home).returncode == 0
    ok = dmn("check", home=home)
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
    found = dmn("check", home=home)
    assert found.returncode == 1
    assert "is unreadable" in found.stderr and "does not match its checksum" in found.stderr


def test_an_ingest_leaves_a_bundle_being_published_alone_and_rollback_waits_for_a_publish(tmp_path, monkeypatch):
    """Ingest recovers crashed batches in tmp/, where a night also stages its bundle: it must only touch
    batches. Rollback and publish share a lock, so CURRENT never names a bundle a publish is pruning."""
    from dmn.errors import Busy
    from dmn.lake.ingest import ingest

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


def test_names_from_logs_never_lead_out_of_the_home(tmp_path):
    """World and encoder names become folder names (lake partitions, bundles): whatever a log says, every
    file dmn writes stays in the home, and the names come back as they were written."""
    home = Home.resolve(tmp_path / "home")
    (home.root / "dmn.toml").write_text(FAST_TOML)
    worlds = ["../../escape", "a/b/../c", "%2e%2e", "/etc/dmn", "~root"]
    for n, world in enumerate(worlds):
        write_logs(home, world=world, encoder=f"../enc{n}/..", situations=4, dim=32, episodes=30, steps=20,
                   accuracy=1.0)
    before = set(tmp_path.iterdir())
    night = dmn("consolidate", "--json", home=home, timeout=300)
    assert night.returncode == 0, night.stderr
    assert sorted(json.loads(line)["world"] for line in night.stdout.splitlines()) == sorted(worlds)
    assert set(tmp_path.iterdir()) == before  # nothing written beside the home
    assert not Path("/etc/dmn").exists()
    for world in worlds:
        assert publish.folder(home, world).parent == home.bundles and publish.current(home, world) == "v000001"
    lake = Store(home).sql("SELECT DISTINCT world, encoder FROM decisions ORDER BY 1").fetchall()
    assert sorted(w for w, _ in lake) == sorted(worlds)
    for path in home.root.rglob("*"):
        assert path.resolve().is_relative_to(home.root.resolve())


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The message of a command that must fail as a user's problem: exit 1, one line, no traceback."""
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    # One "error:" line (wrapped by rich), after any library warning a size limit causes (joblib's semaphore).
    message = " ".join(result.stderr.split("\nerror: ")[-1].split())
    assert result.stderr.count("error: ") == 1 and (result.stderr.startswith("error: ") or "\nerror: " in result.stderr)
    return message


def file_size_limit(limit: int):
    """A child whose writes fail past `limit` bytes per file (EFBIG), as on a full disk; unprivileged."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_stops_each_stage_with_one_line_and_corrupts_nothing(tmp_path):
    """Writes fail past a size (RLIMIT_FSIZE) at every stage, from taking the lock to the run record: each
    failure is one line, the home stays whole, and once there is room one night holds exactly what was logged."""
    home = Home.resolve(tmp_path / "home")
    (home.root / "dmn.toml").write_text(FAST_TOML)
    write_logs(home, situations=4, dim=32, episodes=8, steps=20, accuracy=1.0)
    assert dmn("consolidate", home=home).returncode == 0
    logged, messages = 160, []
    # (bytes a file may grow to, whether the day's batch lands first so that the night meets the full disk)
    for day, (limit, ingested) in enumerate([(0, False), (2_000, False), (3_000, True), (7_000, True),
                                             (12_000, True)], start=1):
        write_logs(home, situations=4, dim=32, episodes=8, steps=20, accuracy=1.0, day=day)
        logged += 160
        if ingested:
            assert dmn("ingest", home=home).returncode == 0
        night = dmn("consolidate", preexec_fn=file_size_limit(limit), home=home)
        if night.returncode:
            messages.append(one_line_error(night))
        check_home(home, "synthetic")
        assert list(home.tmp.glob(f"{publish.STAGING_PREFIX}*")) == []  # a failed publish cleans up after itself
    stages = {"lock": "cannot take the", "ingest": "nothing was committed", "publish": "cannot publish bundle",
              "record": "run record could not be written"}
    assert {stage for stage, words in stages.items() if any(words in m for m in messages)} == set(stages), messages
    assert dmn("consolidate", home=home).returncode == 0
    assert check_home(home, "synthetic") == (logged, logged * 3)
    versions = publish.versions(home, "synthetic")
    assert all(publish.verify(publish.folder(home, "synthetic") / v) for v in versions)  # no orphan half-bundles


def read_only(root: Path) -> list[str]:
    """Make the home at `root` read-only for the dmn processes the test starts; returns the prefix of their
    command line. Root ignores file modes, so as root they run in a mount namespace of their own where
    the home is bind-mounted read-only (writes fail with EROFS, as on a read-only disk)."""
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(root)], check=True)
        return []
    prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
              'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"', str(root)]
    if shutil.which("unshare") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("running as root without the right to make a read-only mount")
    return prefix


LOOKUP = """
import sys
import numpy as np
from dmn import Reflexes
reflex = Reflexes.open("synthetic", home=sys.argv[1], encoder="synthetic@1").lookup(np.load(sys.argv[2])[0])
print(reflex.version if reflex else None)
"""


def test_a_read_only_home_answers_every_question_and_refuses_writes_in_one_line(tmp_path):
    """A home on a read-only disk (or a read-only mount of a backup): SQL, status, check, report elsewhere and
    System 1 lookups work; ingest, consolidate, rollback and a report into the home say in one line that
    they cannot write."""
    home = Home.resolve(tmp_path / "home")
    (home.root / "dmn.toml").write_text(FAST_TOML)
    truth = write_logs(home, situations=4, dim=32, episodes=30, steps=20, accuracy=1.0)
    assert dmn("consolidate", home=home).returncode == 0
    shutil.rmtree(home.tmp)  # a copy of a home need not have its scratch folders
    write_logs(home, situations=4, dim=32, episodes=8, steps=20, accuracy=1.0, day=1)  # waits in the inbox
    states = tmp_path / "states.npy"
    np.save(states, truth.sample(4)[0])
    prefix = read_only(home.root)
    try:
        for command in (["ingest"], ["consolidate"], ["rollback", "--world", "synthetic"], ["report"]):
            message = one_line_error(dmn(*command, prefix=prefix, home=home))
            assert "Read-only" in message or "Permission denied" in message, message
        sql = dmn("sql", "SELECT count(*) AS n FROM decisions", "--format", "json", prefix=prefix, home=home)
        assert sql.returncode == 0 and json.loads(sql.stdout)["n"] == 600, sql.stderr
        status = dmn("status", "--json", prefix=prefix, home=home)
        assert status.returncode == 0 and json.loads(status.stdout)["inbox"]["files"] == 8, status.stderr
        assert dmn("check", prefix=prefix, home=home).returncode == 0
        assert dmn("report", "--out", str(tmp_path / "report"), prefix=prefix, home=home).returncode == 0
        lookup = subprocess.run([*prefix, sys.executable, "-c", LOOKUP, str(home.root), str(states)],
                                capture_output=True, text=True)
        assert lookup.stdout.strip() == "v000001", lookup.stderr
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(home.root)], check=True)
    check_home(home, "synthetic")
    assert dmn("consolidate", home=home).returncode == 0  # writable again: the waiting day lands, once
    assert check_home(home, "synthetic")[0] == 600 + 160


PEAK = """
import json, re, sys
from pathlib import Path
from dmn import Home
from dmn.lake.ingest import ingest
report = ingest(Home.resolve(sys.argv[1]))
# This process's own high-water mark (ru_maxrss would include the parent's, inherited across fork and exec).
peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
print(json.dumps({"records": report.records, "peak": peak}))
"""


def test_ingesting_a_file_far_larger_than_its_memory_limit_streams_it(tmp_path):
    """A 1 GiB log with a 128 MB memory limit: every record lands, and the process never holds the file
    (its peak memory, libraries included, stays under 70% of the file's size)."""
    home = Home.resolve(tmp_path / "home")
    (home.root / "dmn.toml").write_text('[ingest]\nmemory_limit = "128MB"\n')
    steps = big_log(home.inbox / "big.jsonl", 1024)
    size = (home.inbox / "big.jsonl").stat().st_size
    done = subprocess.run([sys.executable, "-c", PEAK, str(home.root)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["records"] == {"episode": 1, "simulation": steps, "decision": steps}
    assert result["peak"] < 0.7 * size, f"peak {result['peak'] / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB file"


class Payload:
    """Unpickling this runs a command: it must never happen to anything dmn reads."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_nothing_from_the_inbox_or_a_bundle_is_unpickled_or_followed_out_of_its_folder(tmp_path, monkeypatch):
    """Pickles in the inbox are skipped; a bundle with a pickled array is refused even when its checksums
    were recomputed; a CURRENT that names a path is refused; the payload never runs."""
    import pickle

    from dmn import Reflexes
    from dmn.errors import DmnError
    from dmn.lake.ingest import ingest

    marker = tmp_path / "payload-ran"
    home = Home.resolve(tmp_path / "home")
    (home.root / "dmn.toml").write_text(FAST_TOML)
    truth = write_logs(home, situations=4, dim=32, episodes=30, steps=20, accuracy=1.0)
    assert dmn("consolidate", home=home).returncode == 0
    (home.inbox / "evil.pkl").write_bytes(pickle.dumps(Payload(marker)))
    np.save(home.inbox / "evil.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True)
    assert ingest(home).skipped["unsupported file type"] == 2

    bundle = publish.folder(home, "synthetic") / "v000001"
    with np.load(bundle / "policy.npz") as npz:
        arrays = dict(npz)
    arrays[next(iter(arrays))] = np.array([Payload(marker)], dtype=object)
    np.savez(bundle / "policy.npz", **arrays)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["policy.npz"] = hashlib.sha256((bundle / "policy.npz").read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DmnError, match="cannot be loaded"):
        load(home, "synthetic")
    reflexes = Reflexes.open("synthetic", home=home, encoder="synthetic@1")
    assert reflexes.lookup(truth.sample(1)[0][0]) is None and "cannot be loaded" in reflexes.problem

    (publish.folder(home, "synthetic") / "CURRENT").write_text("../../../elsewhere")
    with pytest.raises(DmnError, match="not a bundle version"):
        load(home, "synthetic")
    assert not marker.exists()


def test_views_listed_while_a_batch_rolls_forward_are_listed_again_and_a_lost_file_is_one_line(tmp_path, monkeypatch):
    """A reader lists a committed batch's file in staging; the roll-forward moves it before DuckDB opens
    it: the reader lists again (found by the SQL-during-nights test, once in a while). A file that is
    really gone is a clear error, not a traceback."""
    from dmn.errors import DmnError
    from dmn.lake.ingest import ingest

    home = Home.resolve(tmp_path / "home")
    write_logs(home, situations=4, dim=32, episodes=2, steps=5, accuracy=1.0)
    ingest(home)
    listed, calls = Store.files, []

    def racing(self, table, manifests=None):
        calls.append(table)
        files = listed(self, table, manifests)
        return [f + ".moved-away" for f in files] if len(calls) == 1 else files

    monkeypatch.setattr(Store, "files", racing)
    assert Store(home).sql("SELECT count(*) FROM decisions").fetchone()[0] == 10
    monkeypatch.undo()
    Path(Store(home).files("decisions")[0]).unlink()
    with pytest.raises(DmnError, match="missing a file its catalog lists"):
        Store(home).sql("SELECT count(*) FROM decisions")
