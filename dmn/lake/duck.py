"""DuckDB sessions as dmn opens them: UTC, nothing downloaded, statements run to completion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb


def connect(memory_limit: str | None = None, temp_directory: Path | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with dmn's session settings (UTC, no extension downloads)."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": True})
    run(con, "SET GLOBAL TimeZone = 'UTC'")  # GLOBAL: cursors of this connection too
    if memory_limit:
        run(con, f"SET memory_limit = '{memory_limit}'")  # checked by the settings
    if temp_directory:
        run(con, "SET temp_directory = ?", [str(temp_directory)])
    return con


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
