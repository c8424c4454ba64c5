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
