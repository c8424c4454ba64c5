"""SQL over a whole home: the lake's tables, and beside them the nights' runs and the bundles they published.

    >>> store(Home.resolve()).sql("SELECT world, status, version FROM consolidations").fetchall()  # doctest: +SKIP

`consolidations` is one row per night and world (`<home>/runs/`, written by `dmn.sleep.night`);
`artifacts` one row per kept bundle (its manifest, `dmn.bundle.publish`); `situations`, `lessons` and
`bundle_changes` tie the bundles' situations to the decisions they came from and to each other
(`dmn.ops.provenance`). `dmn sql` reads through here.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pyarrow as pa

from dmn.bundle import publish
from dmn.home import Home
from dmn.lake.duck import quote, run, texts
from dmn.lake.store import Store
from dmn.ops import provenance
from dmn.sleep.night import run_files

VIEWS = ("episodes", "simulations", "decisions", "outcomes", "episode_ends", "quarantine", "ingest_files",
         "consolidations", "artifacts", "situations", "lessons", "bundle_changes")
"""Every view a query over a home can read."""

RUN_COLUMNS = ("run_id", "world", "encoder", "status", "reason", "version", "current", "started_at", "ended_at",
               "watermark", "seconds", "counts", "metrics")
ARTIFACT_COLUMNS = ("world", "version", "current", "encoder", "dim", "created_at", "metrics", "thresholds", "window",
                    "run_id", "signature", "path")


def store(home: Home) -> Store:
    """The home's store with every view in `VIEWS`."""
    views = {"consolidations": lambda con: _consolidations(con, home), "artifacts": lambda con: _artifacts(con, home)}
    for name, make in (("situations", provenance.situations), ("lessons", provenance.lessons),
                       ("bundle_changes", provenance.bundle_changes)):
        views[name] = lambda con, name=name, make=make: con.register(name, make(home))
    return Store(home, views=views)


def _consolidations(con: duckdb.DuckDBPyConnection, home: Home) -> None:
    """Read by DuckDB from the records' files (`dmn.sleep.night.run_files`): a year of nights in milliseconds."""
    types = {n: "JSON" if n in ("seconds", "counts", "metrics") else "VARCHAR" for n in RUN_COLUMNS}
    reads = [f"SELECT {', '.join(quote(n) for n in RUN_COLUMNS)} FROM read_json({texts(files)}, "
             f"columns = {{{', '.join(f'{n!r}: {t!r}' for n, t in types.items())}}}, format = '{form}', "
             "ignore_errors = true, union_by_name = true)"
             for files, form in zip(run_files(home), ("auto", "newline_delimited")) if files]
    if not reads:
        con.register("consolidation_records", _json_rows([], RUN_COLUMNS))
    else:  # a record cut between its own file and its month's by a crash is in both: one of them
        run(con, f"""CREATE VIEW consolidation_records AS SELECT * FROM ({' UNION ALL '.join(reads)})
                     WHERE run_id IS NOT NULL QUALIFY row_number() OVER (PARTITION BY run_id) = 1""")
    run(con, """CREATE VIEW consolidations AS SELECT run_id, world, encoder, status, reason, version, current,
        started_at::TIMESTAMPTZ AS started_at, ended_at::TIMESTAMPTZ AS ended_at,
        (metrics::JSON->>'$.combined.coverage')::DOUBLE AS coverage,
        (metrics::JSON->>'$.combined.precision')::DOUBLE AS precision,
        (metrics::JSON->>'$.live.precision')::DOUBLE AS live_precision,
        seconds::JSON AS seconds, counts::JSON AS counts, metrics::JSON AS metrics, watermark
        FROM consolidation_records""")


def _artifacts(con: duckdb.DuckDBPyConnection, home: Home) -> None:
    con.register("artifact_records", _json_rows(publish.manifests(home), ARTIFACT_COLUMNS))
    run(con, """CREATE VIEW artifacts AS SELECT world, version, current::BOOLEAN AS current, encoder, dim::INTEGER AS dim,
        created_at::TIMESTAMPTZ AS created_at, (metrics::JSON->>'$.combined.coverage')::DOUBLE AS coverage,
        (metrics::JSON->>'$.combined.precision')::DOUBLE AS precision, thresholds::JSON AS thresholds,
        "window"::JSON AS "window", run_id, signature IS NOT NULL AS signed, path
        FROM artifact_records""")


def _json_rows(records: list[dict[str, Any]], names: tuple[str, ...]) -> pa.Table:
    """Records as a table of text columns: strings as they are, anything else as JSON (the views cast them)."""
    def cell(value: Any) -> str | None:
        return value if value is None or isinstance(value, str) else json.dumps(value)

    return pa.table({n: pa.array([cell(r.get(n)) for r in records], pa.string()) for n in names})
