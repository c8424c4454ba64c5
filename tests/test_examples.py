"""The examples run as a user would run them, at a small size, so the README's integration story cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from dmn.home import Home
from dmn.lake.ingest import ingest
from dmn.lake.store import Store

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str, *args: str, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_own_agent_gets_reflexes_after_one_night(tmp_path):
    out = example("own_agent.py", "--home", str(tmp_path / "home"), "--episodes", "14")
    days = [(float(r), float(s)) for r, s in re.findall(r"mean return (-?[\d.]+), System 1 served ([\d.]+)%", out)]
    assert "night: published v000001" in out and len(days) == 2, out
    (before, none), (after, served) = days
    assert none == 0 and served >= 50 and after >= before - 0.5, out  # faster, and no worse


def test_log_an_agent_writes_what_ingest_lands(tmp_path):
    example("log_an_agent.py", "--home", str(tmp_path / "home"), "--episodes", "3")
    home = Home.resolve(tmp_path / "home")
    ingest(home)
    assert Store(home).sql("SELECT count(*) FROM episodes").fetchone()[0] == 3
    assert Store(home).sql("SELECT count(*) FROM simulations").fetchone()[0] > 0


SMALL_WORLD = """
[world]
latent_dim = 32
hidden = 64
explore_steps = 3000
updates = 600
rounds = 0

[planner]
horizon = 8
samples = 32
elites = 8
"""


def test_lar_trio_deliberates_sleeps_and_then_answers_from_system1(tmp_path, monkeypatch):
    home = Home.resolve(tmp_path / "home")
    (home.root / "dmn.toml").write_text(SMALL_WORLD)  # a small world model, so that it trains in seconds
    out = example("lar_trio.py", "--home", str(home.root), "--episodes", "12", "--max-steps", "100",
                  env={"DMN_LAR_HMAC_SECRET": "trio-test"}, timeout=600)
    rows = re.findall(r"^\| (\d) \| (-?[\d.]+) \| (-?[\d.]+) \| ([\d.]+)% \| [\d.]+ \| (.*) \|$", out, re.M)
    assert [r[0] for r in rows] == ["0", "1"], out
    (_, _, _, none, night), (_, after, normalised, served, _) = rows
    assert night == "published v000001" and float(none) == 0, out
    assert float(served) >= 50 and float(normalised) >= 0.9, out  # faster, and the return held
    monkeypatch.setenv("DMN_LAR_HMAC_SECRET", "trio-test")
    assert ingest(home).quarantined == {}  # the second day's runs are signed: they verify, as the first day's did
    store = Store(home)
    assert store.sql("SELECT count(*) FROM quarantine").fetchone()[0] == 0
    sources = dict(store.sql("SELECT source, count(*) FROM decisions GROUP BY ALL").fetchall())
    assert store.sql("SELECT count(*) FROM episodes WHERE world = 'CartPole-v1-trio'").fetchone()[0] == 24
    assert abs(sources["system1"] / (12 * float(after)) - float(served) / 100) < 0.01  # CartPole pays 1 a step
    audits = store.sql("SELECT count(*) FROM decisions WHERE reflex IS NOT NULL AND source = 'system2'").fetchone()[0]
    assert audits > 0 and store.sql("SELECT count(*) FROM simulations s JOIN decisions d USING (episode_id, step) "
                                    "WHERE d.source = 'system1'").fetchone()[0] == 0  # reflexes imagine nothing
