"""The CLI: every command documented with an example, user mistakes as one clear line."""

from __future__ import annotations

import json

import click
import pytest
import typer
from typer.testing import CliRunner

from conftest import dmn, episode, simulation, write_jsonl
from dmn.cli import app

runner = CliRunner()


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[str]:
    """Every command of the CLI, subcommands included, as the words that call it."""
    out = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out += commands(command, (*prefix, name))
        else:
            out.append(" ".join((*prefix, name)))
    return out


COMMANDS = commands(typer.main.get_command(app))


def test_the_cli_has_the_commands_the_readme_documents():
    assert set(COMMANDS) >= {"ingest", "sql", "consolidate", "rollback", "world run", "status", "check", "report",
                             "daemon", "demo"}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_an_example(command):
    result = runner.invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0 and "Example:" in result.output


def test_ingest_then_sql_in_every_format(home):
    write_jsonl(home.inbox / "a.jsonl", [episode(), simulation(step=0), simulation(step=1)])
    done = dmn("ingest", "--home", str(home.root), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["records"] == {"episode": 1, "simulation": 2}
    query = "SELECT step, action, score FROM simulations ORDER BY step"
    csv = dmn("sql", query, "--home", str(home.root), "--format", "csv")
    assert csv.stdout.splitlines() == ["step,action,score", "0,1,0.5", "1,1,0.5"]
    rows = [json.loads(line) for line in dmn("sql", query, "--home", str(home.root), "-f", "json").stdout.splitlines()]
    assert rows == [{"step": 0, "action": "1", "score": 0.5}, {"step": 1, "action": "1", "score": 0.5}]
    table = dmn("sql", query, "--home", str(home.root))
    assert "action" in table.stdout and table.returncode == 0


@pytest.mark.parametrize("args,message", [
    (["sql", "SELEC nonsense"], "syntax error"),
    (["sql", "SELECT * FROM no_such_view"], "no_such_view"),
    (["sql", "SELECT 1", "--format", "xml"], "--format"),
    (["ingest", "/no/such/file.jsonl"], "no such file"),
])
def test_user_mistakes_are_one_line_without_traceback(home, args, message):
    done = dmn(*args, "--home", str(home.root))
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr


def test_sql_on_a_missing_home_says_so(tmp_path):
    done = dmn("sql", "SELECT 1", "--home", str(tmp_path / "nowhere"))
    assert done.returncode == 1 and "no dmn home" in done.stderr


def test_bad_settings_file_is_a_clear_error(home):
    (home.root / "dmn.toml").write_text("[ingest]\nmax_line_bytes = 'big'\n")
    done = dmn("ingest", "--home", str(home.root))
    assert done.returncode == 1 and "max_line_bytes must be int" in done.stderr
    (home.root / "dmn.toml").write_text("[ingets]\n")
    assert "unknown section" in dmn("ingest", "--home", str(home.root)).stderr


def test_home_from_environment(home, monkeypatch):
    write_jsonl(home.inbox / "a.jsonl", [episode()])
    monkeypatch.setenv("DMN_HOME", str(home.root))
    done = dmn("ingest", "--json")
    assert json.loads(done.stdout)["records"] == {"episode": 1}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_no_placeholder_for_a_flag(command):
    """A flag takes no value: its help line says so by showing none (newer typer writes `<bool>`)."""
    result = runner.invoke(app, [*command.split(), "--help"], env={"COLUMNS": "120"})
    assert "<bool>" not in result.output and "--help" in result.output


def test_tables_stay_whole_at_80_columns(world):
    """The status and demo tables, printed to a terminal 80 columns wide: every figure whole, nothing cut to `…`."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from dmn import cli
    from dmn.ops.status import status

    def day(n, share, night, imagined=None):
        return SimpleNamespace(day=n, normalised_return=0.987, night=night, held_out={"precision": 0.979},
                               run={"mean_return": -104.6, "system1_share": share, "precision": 0.9964, "agreement": 0.951,
                                    "latency_ms": 12.9 / (1 + 25 * share), "sequences_per_plan": imagined,
                                    "sequences_per_seeded_plan": imagined and imagined // 6})

    discrete, continuous = cli._demo_grid("CartPole-v1"), cli._demo_grid("Pusher-v5")
    for n, (share, night) in enumerate([(0.0, "published v000001: ..."), (0.968, "kept: test coverage ..."), (0.97, None)]):
        discrete.rows.append(cli._demo_row(day(n, share, night), 12.9))
        continuous.rows.append(cli._demo_row(day(n, share, night, imagined=12288), 12.9))
    for grid in (discrete, continuous, cli._status_grid(status(world[0]))):
        for width in (80, 200):
            shown = io.StringIO()
            grid.show(Console(file=shown, width=width, force_terminal=True, color_system=None))
            text = shown.getvalue()
            assert "…" not in text and max(len(line) for line in text.splitlines()) <= width, text
            assert all(cell in text for row in grid.rows for cell in row), text


def test_a_broken_settings_file_is_said_by_every_command(home):
    (home.root / "dmn.toml").write_text("[consolidate]\nbogus = 1\n")
    for args in (["status"], ["sql", "SELECT 1"], ["report"]):
        result = dmn(*args, home=home)
        assert result.returncode == 0 and "bogus" in result.stderr and "warning" in result.stderr, (args, result.stderr)
    checked = dmn("check", home=home)
    assert checked.returncode == 1 and "bogus" in checked.stderr


def test_progress_bars_show_on_a_terminal_and_nowhere_else(home, tmp_path):
    """`dmn ingest` of a 30 MiB log under a pseudo-terminal draws a bar with how much is done; piped, nothing."""
    import os
    import pty
    import re
    import subprocess
    import sys
    import threading

    from dmn.worlds.synthetic import big_log

    big_log(tmp_path / "big.jsonl", 30)
    command = [sys.executable, "-m", "dmn", "ingest", str(tmp_path / "big.jsonl"), "--home"]
    master, terminal = pty.openpty()
    shown = bytearray()

    def drain() -> None:  # a pseudo-terminal holds a few KiB: read as it is written, or the command blocks
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the command closed its end
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    done = subprocess.run([*command, str(home.root)], stdin=terminal, stdout=terminal, stderr=terminal, timeout=300,
                          env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"})
    os.close(terminal)
    reader.join(timeout=30)
    os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", shown.decode("utf-8", "replace"))
    assert done.returncode == 0, text
    bars = [line for line in re.split(r"[\r\n]", text) if "ingesting big.jsonl" in line]
    assert bars and all("━" in line for line in bars) and re.search(r"\d+%", bars[-1]), text
    piped = subprocess.run([*command, str(tmp_path / "other")], capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0 and "ingesting" not in piped.stderr + piped.stdout and "%" not in piped.stderr
