from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dmn.bundle import publish
from dmn.config import ConsolidateSettings
from dmn.home import Home
from dmn.lake.ingest import ingest
from dmn.lake.store import Store
from dmn.sleep.night import Consolidation, consolidate
from dmn.worlds.synthetic import write_logs

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home.resolve(tmp_path / "home")


def dmn(*args: str, home: Home | None = None, prefix: Sequence[str] = (), timeout: float = 300,
        **kwargs: Any) -> subprocess.CompletedProcess:
    """The `dmn` command in a fresh process (on `home` when given, after `prefix` such as a namespace
    wrapper), its output as text; `kwargs` go to subprocess.run (env, cwd, preexec_fn)."""
    command = [*prefix, sys.executable, "-m", "dmn", *args, *(["--home", str(home.root)] if home else [])]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synthetic world in 64-d with three integer actions, consolidated once per test module (tests that
    publish more copy it first): (home, truth)."""
    home = Home.resolve(tmp_path_factory.mktemp("world") / "home")
    truth = write_logs(home, situations=8, dim=64, episodes=60, steps=20)
    assert night(home, ConsolidateSettings(policy_hidden=32, policy_epochs=10))[0].status == "published"
    return home, truth


def night(home: Home, settings: ConsolidateSettings | None = None) -> list[Consolidation]:
    """The nightly job in this process: ingest the inbox, then consolidate every world with new experience."""
    ingest(home)
    return consolidate(home, settings=settings)


def republish(home: Home, files_changed: dict[str, bytes] | None = None, **manifest_changes) -> str:
    """Publish world "synthetic"'s current bundle again as a new version, with some files and manifest fields changed."""
    path = publish.folder(home, "synthetic") / publish.current(home, "synthetic")
    manifest = json.loads((path / "manifest.json").read_text())
    files = {**{name: (path / name).read_bytes() for name in manifest["files"]}, **(files_changed or {})}
    kept = {k: v for k, v in manifest.items() if k not in ("files", "version", "format", "world", "signature")}
    return publish.publish(home, "synthetic", files, {**kept, **manifest_changes}, keep=100)


def write_jsonl(path: Path, records: list[Any]) -> Path:
    """Write records (dicts, or raw strings/bytes for lines that are not JSON) one per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for r in records:
            line = r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode()
            f.write(line + b"\n")
    return path


def episode(eid: str = "e1", world: str = "w", encoder: str = "enc", **kw: Any) -> dict:
    return {"type": "episode", "episode_id": eid, "world": world, "encoder": encoder, **kw}


def _vector(step: Any, dim: int) -> list[float]:
    seed = step if isinstance(step, int) and step >= 0 else 0
    return np.random.default_rng(seed).standard_normal(dim).round(5).tolist()


def simulation(eid: str = "e1", step: int = 0, dim: int = 4, **kw: Any) -> dict:
    return {"type": "simulation", "episode_id": eid, "step": step, "state": _vector(step, dim),
            "action": 1, "score": 0.5, **kw}


def decision(eid: str = "e1", step: int = 0, dim: int = 4, **kw: Any) -> dict:
    return {"type": "decision", "episode_id": eid, "step": step, "state": _vector(step, dim),
            "action": 1, "source": "system2", **kw}


def count(home: Home, table: str, where: str = "true") -> int:
    return Store(home).sql(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]


def run(home: Home, *paths: Path):
    return ingest(home, [str(p) for p in paths] or None)
