"""The shape of the house: the import contract holds, pieces stay small, and the agent's side stays light."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from dmn.config import ConsolidateSettings, IngestSettings, LarSettings, Section
from dmn.ops.jobs import Schedule, Stage
from dmn.worlds.settings import PlannerSettings, WorldSettings

ROOT = Path(__file__).resolve().parent.parent
LONGEST = 150
"""Lines a function or class may have: past that, it is several things."""
NIGHT = ("torch", "duckdb", "matplotlib", "sklearn", "apscheduler", "prometheus_client", "gymnasium")
"""What the agent's side must never load."""


def test_the_import_contract_holds():
    """pyproject.toml's [tool.importlinter]: each layer imports only the layers below it, and the agent's
    side (wake, bundle, integrations and what they stand on) never imports the night's libraries."""
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


def test_no_function_or_class_is_longer_than_a_screenful_and_a_half():
    long = []
    for path in sorted((ROOT / "dmn").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.end_lineno - node.lineno + 1 > LONGEST:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert long == []


def test_an_agent_that_logs_and_asks_loads_none_of_the_night(tmp_path):
    """What `import dmn` brings, logging a step and asking System 1, in a fresh process."""
    code = f"""
import sys, numpy as np
import dmn
with dmn.EpisodeLogger({str(tmp_path)!r}, world="w", encoder="e") as log:
    log.episode()
    log.decision(0, np.ones(4), 1, source="system2", latency_ms=1.0)
assert dmn.Reflexes.open("w", home={str(tmp_path)!r}, encoder="e").lookup(np.ones(4)) is None  # no bundle yet
loaded = sorted({{name.partition(".")[0] for name in sys.modules}} & set({NIGHT!r}))
assert not loaded, loaded
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_pip_install_dmn_brings_the_agent_side_only():
    """The base install is what agents need; the night's libraries come with the `night` extra."""
    from dmn.config import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    assert not [name for name in ("torch", "duckdb", "matplotlib", "scikit-learn", "apscheduler", "prometheus")
                if name in base]
    night = " ".join(project["optional-dependencies"]["night"]).lower()
    assert all(name in night for name in ("torch", "duckdb", "matplotlib", "scikit-learn", "apscheduler"))


SECTIONS = [IngestSettings, LarSettings, ConsolidateSettings, WorldSettings, PlannerSettings, Schedule, Stage]


@pytest.mark.parametrize("kind", SECTIONS, ids=lambda k: k.__name__)
def test_every_number_in_the_settings_says_its_bounds(kind):
    assert issubclass(kind, Section)
    for f in dataclasses.fields(kind):
        if isinstance(f.default, (int, float)) and not isinstance(f.default, bool):
            assert "bounds" in f.metadata, f"{kind.__name__}.{f.name}"
    kind()  # the defaults hold


def test_settings_are_checked_whenever_they_are_made():
    assert WorldSettings(covariance_weight=0).covariance_weight == 0.0  # zero switches a loss term off
    with pytest.raises(ValueError, match="policy_hidden must be at least 1, got 0"):
        dataclasses.replace(ConsolidateSettings(), policy_hidden=0)
    with pytest.raises(ValueError, match="validation_share \\+ test_share must be below 1"):
        ConsolidateSettings(validation_share=0.5, test_share=0.5)
    with pytest.raises(ValueError, match="elites must be at most samples"):
        PlannerSettings(samples=16, elites=32)
    with pytest.raises(ValueError, match="gamma must be positive and below 1"):
        WorldSettings(gamma=1.0)
    with pytest.raises(ValueError, match="seed must be int, got 1.5"):
        ConsolidateSettings(seed=1.5)
    with pytest.raises(ValueError, match="memory_limit must be a size"):
        IngestSettings(memory_limit="lots")


@pytest.mark.parametrize("text,message", [
    ("[consolidate]\nvalidation_share = 0.5\ntest_share = 0.5\n", "[consolidate] validation_share + test_share"),
    ("[planner]\nelites = 200\n", "[planner] elites must be at most samples (128)"),
    ("[world]\ncovariance_weight = -1\n", "[world] covariance_weight must be at least 0"),
    ("[consolidate]\nkeep = true\n", "[consolidate] keep must be int, got True"),
])
def test_a_settings_file_that_breaks_a_rule_is_one_line(tmp_path, text, message):
    from conftest import dmn

    (tmp_path / "dmn.toml").write_text(text)
    command = ("world", "run", "--episodes", "1") if text.startswith(("[world]", "[planner]")) else ("consolidate",)
    done = dmn(*command, "--home", str(tmp_path))
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
