from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dmn.home import Home
from dmn.ingest import ingest
from dmn.store import Store

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home.resolve(tmp_path / "home")


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
