"""The examples run as a user would run them, at a small size, so the README's integration story cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str, *args: str, timeout: float = 300) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_own_agent_gets_reflexes_after_one_night(tmp_path):
    out = example("own_agent.py", "--home", str(tmp_path / "home"), "--episodes", "14")
    days = [(float(r), float(s)) for r, s in re.findall(r"mean return (-?[\d.]+), System 1 served ([\d.]+)%", out)]
    assert "night: published v000001" in out and len(days) == 2, out
    (before, none), (after, served) = days
    assert none == 0 and served >= 50 and after >= before - 0.5, out  # faster, and no worse


def test_log_an_agent_writes_what_ingest_lands(tmp_path):
    from dmn.home import Home
    from dmn.lake.ingest import ingest
    from dmn.lake.store import Store

    example("log_an_agent.py", "--home", str(tmp_path / "home"), "--episodes", "3")
    home = Home.resolve(tmp_path / "home")
    ingest(home)
    assert Store(home).sql("SELECT count(*) FROM episodes").fetchone()[0] == 3
    assert Store(home).sql("SELECT count(*) FROM simulations").fetchone()[0] > 0
