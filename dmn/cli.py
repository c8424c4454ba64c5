"""The `dmn` command: a thin layer over the library, one library call per command.

A user mistake (a bad path, a bad query, a busy home) prints one line and exits 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dmn.errors import DmnError
from dmn.home import Home

app = typer.Typer(
    help="dmn: sleep-time memory consolidation for world-model agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

HomeOption = typer.Option(None, "--home", help="The dmn home (default: $DMN_HOME, else ./dmn-home).", show_default=False)


@app.command()
def ingest(
    paths: Optional[list[Path]] = typer.Argument(None, help="Files or folders to ingest (default: the home's inbox)."),
    home: Optional[Path] = HomeOption,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Ingest agents' logs (.jsonl, .jsonl.gz, Lár run_*.json, dmn Parquet) into the episode store.

    Example: dmn ingest --home ./dmn-home ./more-logs/
    """
    from dmn.ingest import ingest as run_ingest

    report = run_ingest(Home.resolve(home), [str(p) for p in paths] if paths else None)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    summary = Table(title=f"ingest {'batch ' + report.batch if report.batch else '(nothing new)'}", show_header=False)
    summary.add_row("files read", str(report.files_read))
    for reason, n in report.skipped.items():
        summary.add_row(f"skipped: {reason}", str(n))
    for rtype, n in report.records.items():
        summary.add_row(f"{rtype} records", f"{n:,}")
    for reason, n in report.quarantined.items():
        summary.add_row(f"[yellow]quarantined: {reason}[/]", f"{n:,}")
    if report.duplicates:
        summary.add_row("duplicates dropped", f"{report.duplicates:,}")
    if report.pending_bytes:
        summary.add_row("unterminated bytes left for next run", f"{report.pending_bytes:,}")
    summary.add_row("seconds", f"{report.seconds:.2f}")
    out.print(summary)
    for line in report.recovered:
        err.print(f"recovery: {line}")


@app.command()
def sql(
    query: str = typer.Argument(..., help="A SQL query over the views episodes, simulations, decisions, outcomes, "
                                "episode_ends, quarantine, ingest_files."),
    home: Optional[Path] = HomeOption,
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json (one JSON object per line)."),
) -> None:
    """Query the episode store with SQL (DuckDB dialect).

    Example: dmn sql "SELECT world, count(*) AS decisions FROM decisions WHERE source = 'system2' GROUP BY world"
    """
    from dmn.store import Store

    if fmt not in ("table", "csv", "json"):
        raise DmnError(f"--format must be table, csv or json, not {fmt!r}")
    if not query.strip():
        raise DmnError("the query is empty")
    result = Store(Home.resolve(home, create=False)).sql(query)
    if result.description is None:  # a statement without a result set
        return
    names = [d[0] for d in result.description]
    rows = result.fetchall()
    if fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(names)
        writer.writerows(rows)
    elif fmt == "json":
        for row in rows:
            sys.stdout.write(json.dumps(dict(zip(names, row)), default=_jsonable) + "\n")
    else:
        table = Table(*names)
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
        out.print(table)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _cell(value: Any) -> str:
    if value is None:
        return "[dim]NULL[/]"
    if isinstance(value, list) and len(value) > 6:
        head = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value[:4])
        return escape(f"[{head}, … ({len(value)})]")
    if isinstance(value, float):
        return f"{value:.6g}"
    return escape(str(value))


def main() -> None:
    try:
        app()
    except DmnError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        raise SystemExit(1) from None
