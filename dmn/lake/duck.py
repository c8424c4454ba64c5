"""DuckDB sessions as dmn opens them: UTC, nothing downloaded, nothing printed, statements run to completion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb


def connect(memory_limit: str | None = None, temp_directory: Path | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with dmn's session settings: UTC, no extension downloads, and no progress
    bar (DuckDB draws one on stdout for a query past two seconds, into the middle of `--json` output)."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": True})
    run(con, "SET GLOBAL TimeZone = 'UTC'")  # GLOBAL: cursors of this connection too
    run(con, _NO_PROGRESS_BAR)
    if memory_limit:
        run(con, f"SET memory_limit = '{memory_limit}'")  # checked by the settings
    if temp_directory:
        run(con, "SET temp_directory = ?", [str(temp_directory)])
    return con


def cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A cursor of `con` (a session of its own, to stream a result beside other statements), with no progress bar."""
    cur = con.cursor()
    run(cur, _NO_PROGRESS_BAR)
    return cur


_NO_PROGRESS_BAR = "SET enable_progress_bar = false"
"""A per-session setting (DuckDB refuses it globally), so every session, cursors included, sets it."""


def run(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | dict[str, Any] | None = None) -> list[tuple]:
    """Execute a statement to completion and return its rows (DuckDB 2 keeps a result open until fetched)."""
    return con.execute(sql, params).fetchall()


def quote(name: str) -> str:
    """A SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def text(value: object) -> str:
    """A SQL string literal (a path, say)."""
    return "'" + str(value).replace("'", "''") + "'"


def texts(values: list[Any]) -> str:
    """A SQL list of string literals (the files for read_parquet or read_json)."""
    return "[" + ", ".join(map(text, values)) + "]"
