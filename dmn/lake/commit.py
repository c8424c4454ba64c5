"""Commit: the batch's good records as partitioned Parquet, its bad ones in quarantine, and its ledger,
made visible at once (`Store.commit`).

Files are staged under `<home>/tmp/<batch>/` as `<table>/world=<W>/date=<D>/<batch>_<file>_<split>.parquet`:
one file per partition and encoder, so that each holds one latent dimension and stores its vectors as
fixed-size float32 lists.
"""

from __future__ import annotations

import itertools
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from dmn import faults, records
from dmn.home import Home, fsync
from dmn.lake.duck import cursor, quote, run
from dmn.lake.plan import Entry
from dmn.lake.rules import canonical_json
from dmn.lake.store import Store, column_tag
from dmn.records import TABLES

WRITE_BATCH_BYTES = 16 << 20
"""Arrow batches of about this much whatever the latent size, so that the writers' memory is bounded."""
SPLIT_ROWS = 10_000
"""A partition of this many rows or more is written as two files, at once."""
VECTORS = records.VECTOR_COLUMNS
FILE_PROBLEM = pa.schema([("source_file", pa.string()), ("source_line", pa.int64()), ("type", pa.string()),
                          ("episode_id", pa.string()), ("reason", pa.string()), ("hint", pa.string()),
                          ("raw", pa.string()), ("raw_bytes", pa.int64())])
"""A quarantine row for something found while reading a file, not parsing a record of it."""


@dataclass
class Committed:
    records: dict[str, int]
    """Records that landed in the lake, by record type."""
    quarantined: dict[str, int]
    """Records (or files) quarantined, by reason."""
    duplicates: int


@dataclass
class Staged:
    """What `stage` wrote of a batch (or of a Ray engine's shard of one), for `finish` to commit."""

    files: dict[str, list[str]]
    """The staged files by table, relative to the staging folder (as they will be to `lake/`)."""
    columns: dict[str, str]
    """Each table's column tag (`dmn.lake.store.column_tag`)."""
    records: dict[str, int]
    """Rows written, by record type."""
    quarantined: dict[str, int]
    """Rows quarantined, by reason."""
    duplicates: int
    by_file: dict[int, tuple[int, int]]
    """Per file (its number in the batch), its records written and quarantined."""
    decisions: list[dict[str, Any]]
    """Per (world, encoder), its newest decision's time (`dmn.sleep.experience.pairs`)."""


def commit(con: duckdb.DuckDBPyConnection, home: Home, store: Store, batch: str, now: datetime,
           entries: list[Entry], problems: list[dict[str, Any]], fixes: dict[str, list[dict[str, Any]]]) -> Committed:
    """Stage the batch's files, then commit them with its manifest. `problems` are quarantine rows
    (`FILE_PROBLEM`) found while reading; `fixes` what the batch fixes for its worlds ("dims": latent
    dimensions, "action_kinds": kinds of action)."""
    staged = stage(con, home.tmp / batch, batch, now, list(enumerate(e.path for e in entries)), problems)
    return finish(store, batch, entries, list(range(len(entries))), problems, fixes, [staged])


def stage(con: duckdb.DuckDBPyConnection, staging: Path, batch: str, now: datetime, sources: list[tuple[int, str]],
          problems: list[dict[str, Any]], prefix: str = "") -> Staged:
    """Write the good rows of `parsed` as the batch's partitioned files and its bad ones (and `problems`) as
    quarantine, under `staging`; `sources` are the batch's files by number, `prefix` starts the files' names
    (each Ray shard's its own)."""
    staging.mkdir(parents=True, exist_ok=True)
    con.register("files_arrow", pa.Table.from_pylist([{"file_index": i, "source_file": path} for i, path in sources],
                                                     schema=pa.schema([("file_index", pa.int32()), ("source_file", pa.string())])))
    con.register("problems_arrow", pa.Table.from_pylist(problems, schema=FILE_PROBLEM))
    # Tables, not registered Arrow objects: the writer threads read them through cursors of their own.
    run(con, "CREATE TABLE files AS SELECT * FROM files_arrow; CREATE TABLE file_quarantine AS SELECT * FROM problems_arrow")
    stamp = f"'{batch}' AS batch, '{now.isoformat()}'::TIMESTAMPTZ AS ingested_at"
    quarantine = f"""
        SELECT *, {stamp}, '{now.date()}'::DATE AS date FROM (
          SELECT f.source_file, p.source_line, p.rtype AS type, p.episode_id, p.reason, p.hint,
                 coalesce(p.raw, {canonical_json()}) AS raw, coalesce(p.raw_bytes, 0) AS raw_bytes
          FROM parsed p JOIN files f USING (file_index) WHERE p.reason IS NOT NULL AND p.reason <> 'duplicate'
          UNION ALL SELECT * FROM file_quarantine)"""
    quarantined = dict(run(con, f"SELECT reason, count(*) FROM ({quarantine}) GROUP BY 1 ORDER BY 2 DESC"))
    jobs = _record_files(con, staging, f"{batch}_{prefix}", stamp)  # files named <batch>_<prefix><part>_<split>
    if quarantined:
        folder = staging / "quarantine" / f"date={now.date()}"
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append(("quarantine", [], folder / f"{batch}_{prefix}q.parquet", quarantine, batch_rows([])))
    with ThreadPoolExecutor(max_workers=2) as pool:  # pyarrow's writer uses one core: two files at once
        written = list(pool.map(lambda job: (job[0], job[2], *write_file(con, *job)), jobs))
    counts = {rtype: sum(n for table, _, n, _ in written if table == TABLES[rtype][0]) for rtype in TABLES}
    by_file = {i: (good, bad) for i, good, bad in run(con, """SELECT file_index, count(*) FILTER (reason IS NULL),
            count(*) FILTER (reason IS NOT NULL AND reason <> 'duplicate') FROM parsed GROUP BY 1""")}
    files: dict[str, list[str]] = {}
    for table, path, _, _ in written:
        files.setdefault(table, []).append(str(path.relative_to(staging)))
    decisions = [{"world": w, "encoder": e, "last": t} for w, e, t in run(con, """
        SELECT world, encoder, epoch(max(coalesce(ts, ?::TIMESTAMPTZ))) FROM parsed
        WHERE reason IS NULL AND rtype = 'decision' GROUP BY ALL ORDER BY ALL""", [now])]
    return Staged(files={t: sorted(f) for t, f in files.items()},
                  columns={table: column_tag(names) for table, _, _, names in written},
                  records={rtype: n for rtype, n in counts.items() if n}, quarantined=quarantined,
                  duplicates=run(con, "SELECT count(*) FROM parsed WHERE reason = 'duplicate'")[0][0],
                  by_file=by_file, decisions=decisions)


def finish(store: Store, batch: str, entries: list[Entry], numbers: list[int], problems: list[dict[str, Any]],
           fixes: dict[str, list[dict[str, Any]]], staged: list[Staged]) -> Committed:
    """Commit what `stage` wrote (in one call or in shards) with the batch's manifest: its files, its ledger
    (`entries`, the files numbered `numbers`, with what landed of each), what it fixes and what it holds."""
    landed, quarantined, last = Counter(), Counter(), {}
    for shard in staged:
        landed.update(shard.records)
        quarantined.update(shard.quarantined)
        for row in shard.decisions:
            last[row["world"], row["encoder"]] = max(last.get((row["world"], row["encoder"]), row["last"]), row["last"])
    by_number = dict(zip(numbers, entries))
    for shard in staged:
        for i, (good, bad) in shard.by_file.items():
            by_number[i].records += good
            by_number[i].quarantined += bad
    by_path = {e.path: e for e in entries}
    for row in problems:
        by_path[row["source_file"]].quarantined += 1
    tags: dict[str, set[str]] = {}
    for shard in staged:
        for table, tag in shard.columns.items():
            tags.setdefault(table, set()).add(tag)
    faults.point("ingest.commit")
    store.commit({
        "batch": batch, "committed_at": datetime.now(timezone.utc).isoformat(), "schema_version": records.SCHEMA_VERSION,
        "files": {table: sorted(f for shard in staged for f in shard.files.get(table, []))
                  for table in sorted({t for shard in staged for t in shard.files})},
        # one tag per table; tables whose files differ in their columns are read by name
        "columns": {table: next(iter(t)) for table, t in tags.items() if len(t) == 1},
        "ledger": [asdict(e) for e in entries], **fixes, "records": dict(landed),
        # what `dmn.sleep.experience.pairs` needs, so that a night finds what is new without reading every batch
        "decisions": [{"world": w, "encoder": e, "last": t} for (w, e), t in sorted(last.items())],
        "quarantined": dict(quarantined.most_common()),
    })
    return Committed(dict(landed), dict(quarantined.most_common()), sum(s.duplicates for s in staged))


def _record_files(con: duckdb.DuckDBPyConnection, staging: Path, name: str, stamp: str) -> list[tuple]:
    """The files of the good records: one per (record type, world, date, encoder), two for a large one.

    One pass numbers every good row's file (`parsed.part`), so that each file's query reads only its rows.
    """
    run(con, """UPDATE parsed SET part = g.part FROM (
                    SELECT seq, dense_rank() OVER (ORDER BY rtype, world, date, encoder) AS part
                    FROM parsed WHERE reason IS NULL) g
                WHERE parsed.seq = g.seq""")
    lengths = "".join(f", max(len({v}))" for v in VECTORS)
    jobs = []
    for part, rtype, world, date, rows, *sizes in run(con, f"""
            SELECT part, rtype, world, date, count(*){lengths} FROM parsed WHERE reason IS NULL
            GROUP BY ALL ORDER BY part"""):
        table, cols = TABLES[rtype]
        dims = {v: d for v, d in zip(VECTORS, sizes) if v in cols and d}
        select = ", ".join(f"p.{quote(c)}::FLOAT[{dims[c]}] AS {quote(c)}" if c in dims else f"p.{quote(c)}" for c in cols)
        folder = staging / table / f"world={urllib.parse.quote(world, safe='')}" / f"date={date}"
        folder.mkdir(parents=True, exist_ok=True)
        splits = 2 if rows >= SPLIT_ROWS else 1
        for split in range(splits):
            query = f"""SELECT {select}, p.date, f.source_file, p.source_line, {stamp}
                        FROM parsed p JOIN files f USING (file_index)
                        WHERE p.part = {part} AND ((coalesce(p.source_line, 0) % {splits}) + {splits}) % {splits} = {split}"""
            jobs.append((table, list(dims), folder / f"{name}{part}_{split}.parquet", query, batch_rows(list(dims.values()))))
    return jobs


def batch_rows(dims: list[int]) -> int:
    """Rows per Arrow batch for files with latents of these sizes (`WRITE_BATCH_BYTES`)."""
    return max(1024, WRITE_BATCH_BYTES // (256 + 4 * sum(dims)))


def write_file(con: duckdb.DuckDBPyConnection, table: str, vectors: list[str], path: Path, query: str,
                batch_rows: int) -> tuple[int, list[str]]:
    """Write the rows of `query` to `path`; returns how many, and the file's columns."""
    reader = cursor(con).sql(query).to_arrow_reader(batch_rows)
    schema = reader.schema.with_metadata({"dmn_table": table})
    # Dictionaries for the text columns only (trying them on latents costs a third of the write);
    # byte-stream-split latents compress better.
    text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    rows, group = 0, []  # a row group per `batch_rows`, however small the chunks a read of many files yields
    with pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=text,
                          use_byte_stream_split=[f"{v}.list.element" for v in vectors]) as writer:
        for chunk in itertools.chain(reader, [None]):
            if chunk is not None:
                group.append(chunk.replace_schema_metadata(schema.metadata))
                rows += chunk.num_rows
            if group and (chunk is None or sum(c.num_rows for c in group) >= batch_rows):
                writer.write_table(pa.Table.from_batches(group, schema), row_group_size=batch_rows)
                group = []
    fsync(path)  # on disk, with its folder entry, before the manifest that names it
    fsync(path.parent)
    faults.point("ingest.staged")
    return rows, schema.names
