"""The episode store: Parquet files in `lake/`, committed batch by batch through `catalog/`.

A batch becomes visible in one atomic step: its Parquet files are written under `tmp/`,
then its manifest `catalog/<batch>.json` is renamed into place (the commit), then the files
are moved into `lake/`. A crash before the commit leaves nothing behind but staging, which
`recover()` deletes; a crash after it is rolled forward. Readers build their views from the
manifests, so they see whole batches only, and never wait for a writer.

    >>> store = Store(Home.resolve("my-home"))               # doctest: +SKIP
    >>> store.sql("SELECT world, count(*) FROM decisions GROUP BY 1").fetchall()  # doctest: +SKIP

The views of what is not the lake (the nights' runs, the bundles) are added by `dmn.ops.sql`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Collection

import duckdb
import pyarrow as pa

from dmn import faults
from dmn.errors import DmnError
from dmn.home import Home, fsync, write_atomic
from dmn.lake.duck import connect, quote, run, text, texts
from dmn.records import LAKE_TABLES, columns

MANIFEST_VERSION = 1
_OWN_VIEWS = (*LAKE_TABLES, "episodes", "ingest_files")
"""The store's own views (`dmn.ops.sql.VIEWS` adds the nights' and the bundles')."""
BATCH_ID = re.compile(r"b\d{8}T\d{12}Z[0-9a-f]{6}")
"""A batch's name: "b", its UTC start to the microsecond, six random hex digits (`new_batch`)."""


class Store:
    def __init__(self, home: Home, views: dict[str, Callable[[duckdb.DuckDBPyConnection], None]] | None = None):
        """`views`: more views, by name, each made by its function after the lake's (`dmn.ops.sql.store` adds
        the nights' runs and the bundles)."""
        self.home, self.views = home, views or {}

    # -- reading ---------------------------------------------------------------------------

    def manifests(self) -> list[dict[str, Any]]:
        """Every committed batch's manifest, oldest first (not to be changed: they are shared, see `_read_manifest`)."""
        out = []
        catalog = self.home.catalog
        names = sorted(os.listdir(catalog)) if catalog.is_dir() else []  # names, not Paths: a thousand nights, sorted
        for path in [catalog / name for name in names if name.endswith(".json")]:
            try:
                manifest = _read_manifest(path)
            except (OSError, ValueError, TypeError) as exc:
                raise DmnError(f"catalog manifest {path} is unreadable ({exc}); the store needs repair") from None
            out.append(manifest)
        replaced = {batch for m in out for batch in m.get("replaces", ())}  # by a compaction (dmn.lake.compact)
        return [m for m in out if m["batch"] not in replaced] if replaced else out

    def files(self, table: str, manifests: list[dict[str, Any]] | None = None) -> list[str]:
        """The committed Parquet files of `table`, for reading them with any Parquet reader."""
        manifests = self.manifests() if manifests is None else manifests
        return [f for _, files in _located(self.home, table, manifests) for f in files]

    def connect(self, views: Collection[str] | None = None) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with the store's views (episodes, simulations, decisions, outcomes, episode_ends,
        quarantine, ingest_files and those `views` adds), or only the `views` named: each costs its listing.

        >>> store.connect({"decisions"}).sql("SELECT count(*) FROM decisions")  # doctest: +SKIP
        """
        for attempt in range(3):
            try:
                return self._views(connect(), views)
            except duckdb.IOException as exc:
                # Creating a view lists its files: a batch being rolled forward can move one between our
                # listing and DuckDB's. List again.
                if attempt == 2:
                    raise DmnError(f"the store is missing a file its catalog lists ({exc})") from None
                time.sleep(0.05)
        raise AssertionError("unreachable")

    def named(self, query: str) -> set[str]:
        """The views `query` names: the only ones it can read."""
        return {v for v in (*_OWN_VIEWS, *self.views) if re.search(rf"\b{v}\b", query, re.IGNORECASE)}

    def _views(self, con: duckdb.DuckDBPyConnection, views: Collection[str] | None) -> duckdb.DuckDBPyConnection:
        wanted = set(views) if views is not None else {*_OWN_VIEWS, *self.views}
        if "episodes" in wanted:
            wanted |= {"episode_starts", "episode_ends"}
        manifests = self.manifests() if wanted & {*LAKE_TABLES, "ingest_files"} else []
        for table in LAKE_TABLES:
            if table in wanted:
                run(con, f"CREATE VIEW {quote(table)} AS {self.table_sql(table, manifests)}")
        if "episodes" in wanted:
            run(con, """CREATE VIEW episodes AS
                SELECT s.episode_id, s.world, s.encoder, s.agent, s.started_at, e.ended_at,
                       e."return", e.success, s.meta, s.date, s.source_file, s.batch, s.ingested_at
                FROM episode_starts s LEFT JOIN episode_ends e USING (episode_id)""")
        if "ingest_files" in wanted:
            con.register("ingest_files", _ledger_table(manifests))
        for name, make in self.views.items():
            if name in wanted:
                make(con)
        return con

    def table_sql(self, table: str, manifests: list[dict[str, Any]]) -> str:
        """A SELECT of a lake table's committed rows, typed as `dmn.records` says (typed and empty with no files).

        Files are read in groups of one column set (the manifests' `columns`), joined by name: DuckDB reads one
        schema per group, not one per file (files from before the tags: every one's). An empty file with every
        column of the contract comes last, so that a column the files lack reads as NULL."""
        cols = columns(table)
        groups: dict[str | None, list[str]] = {}
        for m, files in _located(self.home, table, manifests):
            groups.setdefault(m.get("columns", {}).get(table), []).extend(files)
        if not groups:
            return _no_rows(cols)
        schema = _schema_file(self.home, table, cols)
        reads = [parquet_scan(files, by_name=tag is None) for tag, files in groups.items()]
        casts = ", ".join(f"{quote(c)}::{t} AS {quote(c)}" for c, t in cols.items())
        source = " UNION ALL BY NAME ".join(reads + ([parquet_scan([schema], by_name=False)] if schema else []))
        return f"SELECT {casts} FROM ({source})"

    def sql(self, query: str, params: list[Any] | None = None) -> duckdb.DuckDBPyConnection:
        """Run a SQL query over the store's views and return its result (fetchall(), to_arrow_table(), ...).

        A bad query raises DmnError with DuckDB's message.
        """
        for attempt in range(3):
            con = self.connect(self.named(query))
            try:
                return con.execute(query, params)
            except duckdb.IOException as exc:
                if str(self.home.root) not in str(exc):  # the query's own file, not the store's
                    raise DmnError(str(exc).strip()) from None
                # A batch being rolled forward moved a file between listing and reading: list again.
                if attempt == 2:
                    raise DmnError(f"the store is missing a file its catalog lists ({exc})") from None
                time.sleep(0.05)
            except duckdb.Error as exc:
                raise DmnError(str(exc).strip()) from None
        raise AssertionError("unreachable")

    def known(self, key: str, manifests: list[dict[str, Any]] | None = None) -> dict[tuple[str, str], int]:
        """What earlier batches fixed per (world, encoder), the first to say it winning: `key` "dims", the latent
        dimension; "action_kinds", the kind of action (0: labels; d: vectors of d values)."""
        fixed: dict[tuple[str, str], int] = {}
        for m in self.manifests() if manifests is None else manifests:
            for row in m.get(key, []):
                fixed.setdefault((row["world"], row["encoder"]), row["dim"])
        return fixed

    # -- writing (callers hold the home's "ingest" lock) -------------------------------------

    def recover(self) -> list[str]:
        """Finish or undo batches a crash interrupted; returns what was done, for the log."""
        done = []
        committed = {p.stem for p in self.home.catalog.glob("*.json")}
        # Batch folders only: a bundle being published is staged in tmp/ too, under the publish lock.
        for staging in sorted(p for p in self.home.tmp.iterdir() if p.is_dir() and BATCH_ID.fullmatch(p.name)):
            if staging.name in committed:
                self._roll_forward(staging.name)
                done.append(f"rolled forward batch {staging.name}")
            else:
                shutil.rmtree(staging, ignore_errors=True)
                done.append(f"discarded uncommitted batch {staging.name}")
        done += _remove_replaced(self.home, self.manifests())
        for leftover in self.home.catalog.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        return done

    def commit(self, manifest: dict[str, Any]) -> None:
        """Make a staged batch visible: write its manifest atomically, then move its files into the lake."""
        manifest = {"version": MANIFEST_VERSION, **manifest}
        write_atomic(self.home.catalog / f"{manifest['batch']}.json", json.dumps(manifest, indent=1).encode())
        faults.point("ingest.committed")
        self._roll_forward(manifest["batch"])

    def _roll_forward(self, batch: str) -> None:
        staging = self.home.tmp / batch
        for src in sorted(staging.rglob("*.parquet")):
            dst = self.home.lake / src.relative_to(staging)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            fsync(dst.parent)
            faults.point("ingest.rolled")
        shutil.rmtree(staging, ignore_errors=True)


def new_batch(now: datetime) -> str:
    """A new batch's name (`BATCH_ID`): it sorts after every batch begun before `now`."""
    return "b" + now.strftime("%Y%m%dT%H%M%S%fZ") + secrets.token_hex(3)


def _remove_replaced(home: Home, manifests: list[dict[str, Any]]) -> list[str]:
    """Remove the manifests that compacted batches replace (a compaction cut between its commit and removing
    them, `dmn.lake.compact`); returns what was done, for the log."""
    done = []
    for m in manifests:
        for batch in m.get("replaces", ()):
            if (home.catalog / f"{batch}.json").exists():
                (home.catalog / f"{batch}.json").unlink()
                done.append(f"removed batch {batch}, which compacted batch {m['batch']} replaces")
    return done


def _located(home: Home, table: str, manifests: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[str]]]:
    """Per batch with files of `table`, where they are: in lake/ once rolled forward; a reader racing the
    roll-forward finds them in staging (only a batch with a staging folder is looked for there)."""
    staging = {p.name for p in home.tmp.iterdir()} if home.tmp.is_dir() else set()
    out = []
    for m in manifests:
        files = []
        for rel in m["files"].get(table, []):
            final, staged = home.lake / rel, home.tmp / m["batch"] / rel
            files.append(str(staged if m["batch"] in staging and not final.exists() and staged.exists() else final))
        if files:
            out.append((m, files))
    return out


def _schema_file(home: Home, table: str, cols: dict[str, str]) -> str | None:
    """An empty Parquet file with every column of `table`, read with its files so that a column added
    to the contract after they were written reads as NULL rather than missing. None if it cannot be written."""
    tag = hashlib.sha256(json.dumps(cols).encode()).hexdigest()[:12]
    path = home.lake / "_schema" / f"{table}-{tag}.parquet"
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            staged = home.tmp / f"{path.name}.{os.getpid()}.tmp"
            with connect() as con:
                run(con, f"COPY ({_no_rows(cols)}) TO {text(staged)} (FORMAT parquet)")
            os.replace(staged, path)
        except (OSError, duckdb.Error):
            return None
    return str(path)


_MANIFESTS: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}
"""Manifests read by this process, by path, with the (inode, size, mtime) they were read at."""


def _read_manifest(path: os.PathLike) -> dict[str, Any]:
    """A manifest, read once per process: a committed manifest is written once (renamed into place) and never
    changed, and a night reads them all several times (ingest, then what is new, then its views)."""
    st = os.stat(path)
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    cached = _MANIFESTS.get(str(path))
    if cached is None or cached[0] != stamp:
        manifest = json.loads(Path(path).read_bytes())
        if not isinstance(manifest, dict) or not {"batch", "committed_at", "files", "ledger"} <= set(manifest):
            raise ValueError("fields are missing")
        cached = _MANIFESTS[str(path)] = (stamp, manifest)
    return cached[1]


LEDGER_SCHEMA = pa.schema([
    ("path", pa.string()), ("kind", pa.string()), ("size", pa.int64()), ("sha256", pa.string()),
    ("bytes_consumed", pa.int64()), ("lines_consumed", pa.int64()), ("records", pa.int64()),
    ("quarantined", pa.int64()), ("batch", pa.string()), ("committed_at", pa.timestamp("us", tz="UTC")),
])


def _ledger_table(manifests: list[dict[str, Any]]) -> pa.Table:
    rows = [
        {**{k: row.get(k) for k in LEDGER_SCHEMA.names}, "batch": row.get("batch", m["batch"]),
         "committed_at": datetime.fromisoformat(row.get("committed_at", m["committed_at"]))}  # theirs, if compacted
        for m in manifests for row in m["ledger"]
    ]
    return pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA)


def column_tag(names: list[str]) -> str:
    """The tag of a file's column set, as a batch's manifest records it per table (`columns`)."""
    return hashlib.sha256(",".join(sorted(names)).encode()).hexdigest()[:12]


def parquet_scan(files: list[str], by_name: bool) -> str:
    """A SELECT of every row of these Parquet files: by name when their columns may differ."""
    return f"SELECT * FROM read_parquet({texts(files)}, union_by_name = {str(by_name).lower()}, hive_partitioning = false)"


def _no_rows(cols: dict[str, str]) -> str:
    """A SELECT of no rows with these typed columns."""
    return "SELECT " + ", ".join(f"NULL::{t} AS {quote(c)}" for c, t in cols.items()) + " WHERE false"

