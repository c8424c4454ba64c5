"""The daemon: consolidates on its schedule, is alone on its home, and stops cleanly."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import dmn
from dmn import Home
from dmn.bundle import publish
from dmn.ops.daemon import HEARTBEAT, alive
from dmn.ops.sql import store
from dmn.worlds.synthetic import write_logs


def daemon(home, *args: str, stderr) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dmn", "daemon", *args, "--home", str(home.root)],
                            stdout=subprocess.DEVNULL, stderr=stderr, text=True)


def test_the_daemon_consolidates_refuses_a_second_and_stops_on_sigterm(home, tmp_path):
    (home.root / "dmn.toml").write_text("[consolidate]\npolicy_hidden = 16\npolicy_epochs = 5\n")
    log = open(tmp_path / "daemon.log", "w")
    with socket.socket() as probe:  # a free port for the metrics
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    first = daemon(home, "--interval", "2", "--log-json", "--metrics-port", str(port), stderr=log)
    try:
        staged = Home.resolve(tmp_path / "agent")  # an agent's logs, dropped into the inbox at once
        write_logs(staged, situations=4, dim=16, episodes=40, steps=20, accuracy=1.0)
        for path in staged.inbox.iterdir():
            path.rename(home.inbox / path.name)
        deadline = time.monotonic() + 120
        while not (home.locks / HEARTBEAT).exists():  # its first beat, as it starts
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()
            time.sleep(0.1)
        while publish.current(home, "synthetic") is None and time.monotonic() < deadline:
            assert first.poll() is None, (tmp_path / "daemon.log").read_text()
            assert alive(home, within=15) < 15  # busy with its night, it still beats
            time.sleep(0.5)
        assert publish.current(home, "synthetic") == "v000001"
        metrics = ""  # the night's gauges are set just after it publishes
        while "dmn_bundle_version{" not in metrics:
            assert time.monotonic() < deadline, metrics
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            time.sleep(0.05)
        assert 'dmn_bundle_version{world="synthetic"} 1.0' in metrics
        assert 'dmn_last_night_success{world="synthetic"} 1.0' in metrics
        assert 'dmn_lake_records{kind="decisions",world="synthetic"} 800.0' in metrics
        served = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10).read())
        assert served["worlds"]["synthetic"]["bundle"]["version"] == "v000001"
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=120).read().decode()
        assert "synthetic" in page and "v000001" in page and "data:image/png;base64," in page
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=10)
            raise AssertionError("a page that is not there was served")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
        second = dmn("daemon", "--interval", "2", home=home, timeout=60)
        assert second.returncode == 1 and "another dmn daemon is running" in second.stderr
        assert "Traceback" not in second.stderr
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 0
    finally:
        first.kill()
        log.close()
    lines = [json.loads(line) for line in (tmp_path / "daemon.log").read_text().splitlines()]
    assert lines[0]["message"] == "started" and lines[-1]["message"].startswith("stopped")
    assert {line["level"] for line in lines} == {"info"}, lines  # ticks during the night: absorbed, not logged
    nights = [line for line in lines if line["message"] == "night"]
    assert nights[0]["world"] == "synthetic" and nights[0]["status"] == "published"
    assert all(line["status"] == "nothing new" for line in nights[1:])  # later ticks: no new experience
    assert store(home).sql("SELECT status FROM consolidations ORDER BY started_at").fetchone() == ("published",)


def test_bad_schedules_are_refused_in_one_line(home):
    for args, message in [(["--cron", "every night"], "5-field cron"), (["--interval", "0"], "positive")]:
        done = dmn("daemon", *args, home=home, timeout=60)
        assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr


def test_status_says_what_serves_what_happened_and_what_waits(home):
    write_logs(home, situations=4, dim=16, episodes=40, steps=20, accuracy=1.0)
    done = dmn("consolidate", home=home, timeout=120)
    assert done.returncode == 0, done.stderr
    (home.inbox / "late.jsonl").write_text('{"type": "episode", "episode_id": "x", "world": "synthetic"}\n')
    state = json.loads(dmn("status", "--json", home=home, timeout=60).stdout)
    world = state["worlds"]["synthetic"]
    assert world["bundle"]["version"] == "v000001" and world["bundle"]["precision"] >= 0.95
    assert world["last_night"]["status"] == "published" and world["lake"] == {
        "episodes": 40, "decisions": 800, "simulations": 2400}
    assert state["inbox"]["files"] == 1 and state["quarantined"] == {}
    table = dmn("status", home=home, timeout=60)
    assert table.returncode == 0 and "v000001" in table.stdout and "1 file (" in table.stdout


def test_report_writes_a_page_with_its_plots(home, tmp_path):
    write_logs(home, situations=4, dim=16, episodes=40, steps=20, accuracy=1.0)
    (home.inbox / "bad.jsonl").write_text("{not json\n")
    assert dmn("consolidate", home=home, timeout=120).returncode == 0
    done = dmn("report", "--out", str(tmp_path / "r"), home=home, timeout=120)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "r" / "index.html").read_text()
    pngs = sorted(p.name for p in (tmp_path / "r").glob("*.png"))
    assert pngs == ["quarantine.png", "synthetic-curve.png", "synthetic-days.png", "synthetic-map.png",
                    "synthetic-timings.png"]
    assert all((tmp_path / "r" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert page.count("data:image/png;base64,") == 5 and "v000001" in page  # self-contained
    unknown = dmn("report", "--world", "nope", home=home, timeout=60)
    assert unknown.returncode == 1 and "no world 'nope'" in unknown.stderr and "Traceback" not in unknown.stderr


def test_the_nightly_job_is_data_that_consolidate_runs_once(home, tmp_path):
    from dmn.ops.jobs import load

    job = load(Path(__file__).resolve().parent.parent / "jobs" / "nightly.toml")
    assert job.schedule.cron == "0 3 * * *" and job.schedule.idle_after == 600
    assert [(s.run, s.settings) for s in job.stages] == [("ingest", {}), ("consolidate", {"keep": 7}), ("report", {})]
    write_logs(home, situations=4, dim=16, episodes=40, steps=20, accuracy=1.0)
    done = dmn("consolidate", "--job", "jobs/nightly.toml", home=home, timeout=180,
               cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    assert publish.current(home, "synthetic") == "v000001" and (home.root / "report" / "index.html").exists()
    manifest = json.loads((publish.folder(home, "synthetic") / "v000001" / "manifest.json").read_text())
    assert manifest["settings"]["keep"] == 7  # the job's setting, not the home's default
    for text, message in [('[[stages]]\nrun = "dream"\n', "must be one of ingest, consolidate, report"),
                          ('[[stages]]\nrun = "consolidate"\n[stages.settings]\nkeep = -1\n', "keep must be"),
                          ('[schedule]\nwhen = "3am"\n', "unknown setting(s) in [schedule]"), ("", "at least one")]:
        (tmp_path / "bad.toml").write_text(text)
        bad = dmn("consolidate", "--job", str(tmp_path / "bad.toml"), home=home, timeout=60)
        assert bad.returncode == 1 and message in bad.stderr and "Traceback" not in bad.stderr, text


def test_a_frozen_daemon_fails_its_healthcheck_and_a_restarted_one_reports_the_home(world, tmp_path):
    """`dmn alive` passes while the daemon beats and fails once it is frozen; a daemon started on a home that
    other processes consolidated fills its gauges from the home at once, as `dmn status --json` reads it."""
    import shutil

    shutil.copytree(world[0].root, tmp_path / "home")
    home = Home.resolve(tmp_path / "home")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(tmp_path / "daemon.log", "w")
    running = daemon(home, "--cron", "0 3 * * *", "--metrics-port", str(port), stderr=log)
    try:
        deadline = time.monotonic() + 60
        while dmn("alive", "--within", "10", home=home).returncode != 0:
            assert running.poll() is None and time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()
            time.sleep(0.3)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        state = json.loads(dmn("status", "--json", home=home).stdout)["worlds"]["synthetic"]
        gauge = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                 if line.startswith("dmn_") and "{" in line}
        assert gauge['dmn_bundle_version{world="synthetic"}'] == int(state["bundle"]["version"][1:])
        assert gauge['dmn_system1_heldout_coverage_ratio{world="synthetic"}'] == state["bundle"]["coverage"]
        assert gauge['dmn_system1_heldout_precision_ratio{world="synthetic"}'] == state["bundle"]["precision"]
        assert gauge['dmn_last_night_success{world="synthetic"}'] == 1.0
        assert gauge['dmn_lake_records{kind="decisions",world="synthetic"}'] == state["lake"]["decisions"]
        running.send_signal(signal.SIGSTOP)
        time.sleep(3)
        frozen = dmn("alive", "--within", "2", home=home)  # its last beat is 3 s old at least
        assert frozen.returncode == 1 and "frozen or gone" in frozen.stderr
        running.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 20
        while dmn("alive", "--within", "2", home=home).returncode != 0:  # thawed, it beats again
            assert time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        running.send_signal(signal.SIGCONT)
        running.send_signal(signal.SIGTERM)
        running.wait(timeout=30)
        log.close()
    assert "maximum number of running instances" not in (tmp_path / "daemon.log").read_text()
