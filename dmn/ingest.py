"""Ingest: agents' logs in, episodes out.

One run reads every new file (or the new lines of a grown one), parses all of it in DuckDB,
checks every record against the contract in `dmn.records`, and commits the good records to
the lake and the bad ones to quarantine in one batch (see `dmn.store`), with the ledger of
what was consumed. Re-running it, or ingesting a copy of a file, adds nothing.

    >>> report = ingest(Home.resolve("my-home"))          # the inbox   # doctest: +SKIP
    >>> report.records                                     # doctest: +SKIP
    {'episode': 10, 'simulation': 4800, 'decision': 1600, 'outcome': 1600, 'episode_end': 10}

The pipeline, top to bottom:
  1. discover   files to read, and why others are skipped
  2. plan       per file, from the ledger: skip, read the new tail, or read it all
  3. read       stream complete lines in chunks (numpy finds the newlines; no per-record Python)
  4. parse      one DuckDB pass per chunk: json_transform, then the per-record rules (dmn.validate)
  5. resolve    the rules across records: episodes known, duplicates, latent dimensions
  6. commit     partitioned Parquet + quarantine + ledger, atomically (Store.commit)
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import queue
import secrets
import threading
import time
import urllib.parse
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dmn import faults, records, tensors
from dmn.config import Settings, size_bytes
from dmn.errors import DmnError
from dmn.home import Home, fsync
from dmn.integrations.lar import audit_to_records
from dmn.records import TABLES, columns
from dmn.store import Store, connect, quote, run
from dmn.validate import KEYED, MACROS, PARSED_COLUMNS, RAW_KEEP_BYTES, RESOLVE, canonical_json, parse_sql

WRITE_BATCH_BYTES = 16 << 20
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".swp", ".crdownload")
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass
class IngestReport:
    """What one ingest run did; `dmn ingest --json` prints it."""

    batch: str | None = None
    """The committed batch id, or None when there was nothing new."""
    files_read: int = 0
    """Files (or new tails of files) that were read."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Files not read, by reason."""
    records: dict[str, int] = field(default_factory=dict)
    """Records that landed in the lake, by record type."""
    quarantined: dict[str, int] = field(default_factory=dict)
    """Records (or files) quarantined, by reason."""
    duplicates: int = 0
    """Records dropped as exact duplicates of records already in the store."""
    pending_bytes: int = 0
    """Bytes of unterminated last lines left for the next run (a writer may still be appending)."""
    bytes_read: int = 0
    """Bytes of log data read."""
    seconds: float = 0.0
    """Wall time of the run."""
    recovered: list[str] = field(default_factory=list)
    """What recovery did to batches a crash had interrupted."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ingest(home: Home, paths: list[str | os.PathLike] | None = None) -> IngestReport:
    """Ingest `paths` (files or folders; default: the home's inbox) into the home's store."""
    started = time.perf_counter()
    settings = home.settings()
    with home.lock("ingest"):
        store = Store(home)
        report = IngestReport(recovered=store.recover())
        faults.point("ingest.recovered")
        batch = _Batch(home, settings, store, report)
        try:
            files, skipped = discover([Path(p) for p in paths] if paths else [home.inbox], home)
            report.skipped = dict(Counter(reason for _, reason in skipped))
            for path in files:
                batch.add_file(path)
                faults.point("ingest.read")
            batch.finish()
        except OSError as exc:  # a full or read-only disk: nothing was committed, the next run cleans up
            raise DmnError(f"ingest stopped, nothing was committed: {exc.strerror or exc} "
                           f"({exc.filename or home.root})") from None
        except duckdb.IOException as exc:  # a lake file named by the catalog is gone
            raise DmnError(f"ingest stopped, nothing was committed: the store is damaged ({exc})") from None
        except duckdb.OutOfMemoryException:
            raise DmnError(f"ingest stopped, nothing was committed: these logs need more memory than [ingest] "
                           f"memory_limit = {settings.ingest.memory_limit!r} allows; raise it in "
                           f"{home.root / 'dmn.toml'}") from None
        finally:
            batch.close()
    report.seconds = round(time.perf_counter() - started, 3)
    return report


# -- 1. discover --------------------------------------------------------------------------------


def file_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith((".jsonl.gz", ".ndjson.gz")):
        return "jsonl.gz"
    if name.startswith("run_") and name.endswith(".json"):
        return "lar"
    if name.endswith(".parquet"):
        return "parquet"
    return None


def discover(paths: list[Path], home: Home) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files to read under `paths`, and (file, reason) for those skipped.

    Symbolic links inside folders are not followed (a link could point anywhere, and a
    file could arrive twice); hidden and temporary files are still being written.
    """
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for given in dict.fromkeys(p.absolute() for p in paths):  # a path given twice is read once
        if not given.exists() and not given.is_symlink():
            raise DmnError(f"no such file or folder: {given}")
        if given.is_dir():
            for root, dirs, names in os.walk(given):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    _consider(Path(root) / name, home, files, skipped)
        else:
            _consider(given.resolve(), home, files, skipped)
    return files, skipped


def _consider(path: Path, home: Home, files: list[Path], skipped: list[tuple[Path, str]]) -> None:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        skipped.append((path, "file name is not valid UTF-8 (rename it)"))
        return
    if path.is_symlink():
        skipped.append((path, "symbolic link (not followed; copy the file instead)"))
    elif path.name.startswith(".") or path.name.endswith(TEMP_SUFFIXES):
        skipped.append((path, "temporary file (still being written)"))
    elif path.absolute().is_relative_to(home.lake) or path.absolute().is_relative_to(home.tmp):
        skipped.append((path, "inside the store itself"))
    elif not path.is_file():
        skipped.append((path, "not a regular file"))
    elif file_kind(path) is None:
        skipped.append((path, "unsupported file type"))
    elif path.stat().st_size == 0:
        skipped.append((path, "empty file"))
    elif not os.access(path, os.R_OK):
        skipped.append((path, "unreadable file (permission denied)"))
    elif path not in files:
        files.append(path)


# -- 2-6. the batch ------------------------------------------------------------------------------


class _Batch:
    """One ingest run's DuckDB session: chunks go in, one committed batch comes out."""

    def __init__(self, home: Home, settings: Settings, store: Store, report: IngestReport):
        self.home, self.settings, self.store, self.report = home, settings, store, report
        now = datetime.now(timezone.utc)
        self.id = "b" + now.strftime("%Y%m%dT%H%M%S%fZ") + secrets.token_hex(3)
        self.now = now
        self.manifests = store.manifests()
        self.ledger = {row["path"]: row for m in self.manifests for row in m["ledger"]}
        self.hashes = {(row["bytes_consumed"], row["sha256"]) for m in self.manifests for row in m["ledger"]}
        self.entries: list[dict[str, Any]] = []
        self.file_quarantine: list[dict[str, Any]] = []
        self.con = connect(settings.ingest.memory_limit, home.tmp / "duckdb")
        # A pass over the lines needs a few times their size in DuckDB: keep it well inside the limit.
        self.chunk_bytes = min(settings.ingest.chunk_bytes, size_bytes(settings.ingest.memory_limit) // 4)
        run(self.con, "SET preserve_insertion_order = false")
        self.con.create_function(
            "dmn_tensor", tensors.decode_column, ["BLOB", "VARCHAR"], "FLOAT[]", type="arrow",
            null_handling="special", side_effects=False,
        )
        run(self.con, MACROS)
        run(self.con, f"CREATE TABLE parsed ({PARSED_COLUMNS})")
        self.parse_sql = parse_sql(settings.ingest.future_skew_seconds)
        self.pending: list[pa.Table] = []
        self.pending_bytes = 0
        self.passes = 0
        self.rows = 0  # records queued so far: each gets its own seq, in reading order

    def close(self) -> None:
        self.con.close()

    # 2. plan

    def add_file(self, path: Path) -> None:
        kind = file_kind(path)
        key = self._key(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            self._skip("gone before it was read")
            return
        prev = self.ledger.get(key)
        if prev and prev["size"] == st.st_size and prev["mtime_ns"] == st.st_mtime_ns and prev["bytes_consumed"] == st.st_size:
            self._skip("already ingested (unchanged)")
            return
        offset, line, hasher = 0, 0, hashlib.sha256()
        if kind == "jsonl" and prev and st.st_size >= prev["bytes_consumed"]:
            with open(path, "rb") as f:
                _hash_prefix(f, prev["bytes_consumed"], hasher)
            if hasher.hexdigest() == prev["sha256"]:
                offset, line = prev["bytes_consumed"], prev["lines_consumed"]
                if offset == st.st_size:
                    self._skip("already ingested (unchanged)")
                    return
            else:
                hasher = hashlib.sha256()
        if offset == 0 and any(size == st.st_size for size, _ in self.hashes):
            with open(path, "rb") as f:
                digest = _hash_prefix(f, st.st_size, hashlib.sha256()).hexdigest()
            if (st.st_size, digest) in self.hashes:
                self._skip("copy of an ingested file")
                return
        entry = {
            "path": key, "kind": kind, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "bytes_consumed": offset, "lines_consumed": line, "sha256": "", "records": 0, "quarantined": 0,
        }
        self.file_index = len(self.entries)
        self.entries.append(entry)
        self.report.files_read += 1
        quarantined = len(self.file_quarantine)
        try:
            if kind == "jsonl":
                self._read_jsonl(path, entry, hasher, settled=time.time() - st.st_mtime > self.settings.ingest.settle_seconds)
            elif kind == "jsonl.gz":
                self._read_gzip(path, entry)
            elif kind == "lar":
                self._read_lar(path, entry)
            else:
                self._read_parquet(path, entry)
        except OSError as exc:
            raise DmnError(f"cannot read {path}: {exc.strerror}") from None
        if entry["bytes_consumed"] == offset and len(self.file_quarantine) == quarantined:
            self.entries.pop()  # only an unterminated tail: nothing to record until its writer finishes it
            self.report.files_read -= 1
        else:
            self.hashes.add((entry["bytes_consumed"], entry["sha256"]))  # a copy later in this run is skipped

    def _key(self, path: Path) -> str:
        path = path.absolute()
        return str(path.relative_to(self.home.root)) if path.is_relative_to(self.home.root) else str(path)

    def _skip(self, reason: str) -> None:
        self.report.skipped[reason] = self.report.skipped.get(reason, 0) + 1

    # 3. read

    def _read_jsonl(self, path: Path, entry: dict, hasher: Any, settled: bool) -> None:
        with open(path, "rb") as f:
            f.seek(entry["bytes_consumed"])
            if entry["bytes_consumed"] == 0 and f.read(3) != UTF8_BOM:  # Windows editors start files with one
                f.seek(0)
            elif entry["bytes_consumed"] == 0:
                hasher.update(UTF8_BOM)
                entry["bytes_consumed"] = len(UTF8_BOM)
            tail, _, long_tail = self._stream(f, entry, hasher, block_size=1 << 20)
            if long_tail and not settled:  # an over-long last line still being written: wait for its end
                size, _head, hasher = long_tail
                self.report.pending_bytes += size
            elif long_tail:
                self._consume_long(entry, *long_tail[:2])
            elif tail:
                if _is_json(tail) or settled:
                    hasher.update(tail)
                    entry["bytes_consumed"] += len(tail)
                    entry["lines_consumed"] += 1
                    if _is_json(tail):
                        self._parse(_lines_table([tail], [entry["lines_consumed"]]))
                    else:
                        self._quarantine_file(entry, "truncated last line (the file ends in the middle of a record)",
                                              "the writer stopped mid-record; the rest of the file was ingested",
                                              line=entry["lines_consumed"], raw=tail)
                else:
                    self.report.pending_bytes += len(tail)
        entry["sha256"] = hasher.hexdigest()

    def _read_gzip(self, path: Path, entry: dict) -> None:
        hasher = hashlib.sha256()
        with open(path, "rb") as raw:
            _hash_prefix(raw, entry["size"], hasher)
        with gzip.open(path, "rb") as f:
            try:
                if f.read(len(UTF8_BOM)) != UTF8_BOM:
                    f.seek(0)
            except (EOFError, zlib.error, gzip.BadGzipFile):
                f.seek(0)  # _stream meets the damage again and reports it
            tail, error, long_tail = self._stream(f, entry, None, block_size=1 << 16)
        if long_tail:
            self._consume_long(entry, *long_tail[:2])
        if error is not None:
            self._quarantine_file(entry, "corrupt gzip file", f"decompression failed after line {entry['lines_consumed']} "
                                  f"({error}); the lines before it were ingested (if a writer was still writing it, "
                                  "the rest lands once the file is complete)", line=entry["lines_consumed"] + 1, raw=tail)
        elif tail:
            entry["lines_consumed"] += 1
            self._parse(_lines_table([tail], [entry["lines_consumed"]]))
        entry["bytes_consumed"] = entry["size"]
        entry["sha256"] = hasher.hexdigest()

    def _stream(self, f: Any, entry: dict, hasher: Any | None, block_size: int) -> tuple[bytes, Exception | None, Any]:
        """Parse every complete line of `f`; return the unterminated tail, any read error, and
        (size, head, hasher as it was before it) for an over-long last line without its newline.

        A thread reads and hashes the next chunk while DuckDB parses this one.
        """
        tail, error, long_tail = b"", None, None
        settings = self.settings.ingest
        blocks = min(self.chunk_bytes, 1 << 24)  # the reader hands over 16 MiB at a time; _parse gathers them
        for event in _prefetch(_read_chunks(f, hasher, blocks, settings.max_line_bytes, block_size)):
            kind, payload = event
            if kind == "lines":
                block, offsets = payload
                self.report.bytes_read += len(block)
                entry["bytes_consumed"] += len(block)
                self._parse_block(block, offsets, entry)
            elif kind == "long":
                self._consume_long(entry, *payload)
            elif kind == "long_tail":
                long_tail = payload
            elif kind == "tail":
                tail = payload
            else:
                error = payload
        return tail, error, long_tail

    def _consume_long(self, entry: dict, size: int, head: bytes) -> None:
        self.report.bytes_read += size
        entry["bytes_consumed"] += size
        entry["lines_consumed"] += 1
        self._quarantine_long(entry, entry["lines_consumed"], size, head)

    def _parse_block(self, block: bytes, offsets: np.ndarray, entry: dict) -> None:
        """Queue one block of complete lines; `offsets` are the line starts plus the block's end."""
        ends = offsets[1:]
        first = entry["lines_consumed"] + 1
        entry["lines_consumed"] += len(ends)
        numbers = np.arange(first, first + len(ends), dtype=np.int64)
        lengths = np.diff(offsets)
        too_long = lengths > self.settings.ingest.max_line_bytes + 1
        values = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(block)])
        table = pa.table({"line": numbers, "raw": values})
        if too_long.any():
            for i in np.flatnonzero(too_long):
                self._quarantine_long(entry, int(numbers[i]), int(lengths[i]), block[offsets[i] : offsets[i] + 4096])
            table = table.filter(pa.array(~too_long))
        self._parse(table)

    def _read_lar(self, path: Path, entry: dict) -> None:
        data = path.read_bytes()
        self.report.bytes_read += len(data)
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        entry["bytes_consumed"] = len(data)
        lines, problem = audit_to_records(data, self.settings.lar, run_name=path.stem)
        if problem:
            self._quarantine_file(entry, *problem, raw=data)
            return
        entry["lines_consumed"] = len(lines)
        if lines:
            self._parse(_lines_table([line for _, line in lines], [n for n, _ in lines]))

    def _read_parquet(self, path: Path, entry: dict) -> None:
        with open(path, "rb") as f:
            entry["sha256"] = _hash_prefix(f, entry["size"], hashlib.sha256()).hexdigest()
        entry["bytes_consumed"] = entry["size"]
        self.report.bytes_read += entry["size"]
        try:
            meta = dict(run(self.con, "SELECT key::VARCHAR, value::VARCHAR FROM parquet_kv_metadata(?)", [str(path)]))
            rtype = {table: rtype for rtype, (table, _) in TABLES.items()}.get(meta.get("dmn_table", ""))
            if rtype is None:
                self._quarantine_file(entry, "not a dmn lake file", "Parquet files must come from a dmn lake "
                                      "(they carry dmn_table metadata); write other data as JSONL")
                return
            fields = [c for c in TABLES[rtype][1] if rtype == "episode" or c not in ("world", "encoder")]
            pack = ", ".join(f"{quote(c)} := {quote(c)}{'::JSON' if c == 'meta' else ''}" for c in fields)
            table = self.con.sql(
                f"SELECT row_number() OVER () AS line, to_json(struct_pack(type := '{rtype}', {pack}))::BLOB AS raw "
                "FROM read_parquet($file)", params={"file": str(path)},
            ).to_arrow_table()
        except duckdb.Error as exc:
            self._quarantine_file(entry, "unreadable Parquet file", str(exc).splitlines()[0])
            return
        entry["lines_consumed"] = table.num_rows
        self._parse(table)

    # 4. parse

    def _parse(self, lines: pa.Table) -> None:
        """Queue the current file's lines; parse once `chunk_bytes` have gathered (across files, so
        that a thousand small episode files cost a few DuckDB passes, not a thousand)."""
        n = lines.num_rows
        lines = lines.append_column("file_index", pa.array(np.full(n, self.file_index, np.int32)))
        self.pending.append(lines.append_column("seq", pa.array(np.arange(self.rows, self.rows + n, dtype=np.int64))))
        self.rows += n
        self.pending_bytes += lines.nbytes
        # The first passes are small, so that DuckDB starts while the reader is still on the first chunk.
        if self.pending_bytes >= min(self.chunk_bytes, (1 << 24) << self.passes):
            self._parse_pending()

    def _parse_pending(self) -> None:
        if not self.pending:
            return
        chunk = pa.concat_tables(self.pending)
        self.pending, self.pending_bytes = [], 0
        self.passes += 1
        # Small record batches let DuckDB spread one chunk over all cores (a chunk of 768-d lines
        # is only a few thousand rows, a single vector otherwise).
        self.con.register("chunk", pa.Table.from_batches(chunk.to_batches(max_chunksize=256), chunk.schema))
        try:
            run(self.con, self.parse_sql)
        finally:
            self.con.unregister("chunk")

    def _quarantine_long(self, entry: dict, line: int, size: int, head: bytes) -> None:
        self._quarantine_file(entry, "line too long", f"line is {size:,} bytes, over the limit of "
                              f"{self.settings.ingest.max_line_bytes:,} (ingest.max_line_bytes); its first 4 KiB are kept",
                              line=line, raw=head)

    def _quarantine_file(self, entry: dict, reason: str, hint: str, *, line: int | None = None, raw: bytes = b"") -> None:
        self.file_quarantine.append({
            "source_file": entry["path"], "source_line": line, "type": None, "episode_id": None,
            "reason": reason, "hint": hint, "raw": raw[:RAW_KEEP_BYTES].decode("utf-8", "replace"),
            "raw_bytes": len(raw),
        })

    # 5. resolve

    def finish(self) -> None:
        self._parse_pending()
        if not self.entries:
            return
        con = self.con
        # Tables, not registered Arrow objects: the writer threads read them through cursors of their own.
        self._table("files", pa.Table.from_pylist([{"file_index": i, "source_file": e["path"]} for i, e in enumerate(self.entries)]))
        run(con, "CREATE TABLE lake_episodes AS SELECT episode_id, world, encoder, started_at "
                 f"FROM ({self.store.table_sql('episode_starts', self.manifests)})")
        for sql in RESOLVE:
            run(con, sql)
        self._check_dims()
        for rtype, key, content in KEYED:
            run(con, f"UPDATE parsed SET fingerprint = hash({content}) WHERE reason IS NULL AND rtype = '{rtype}'")
            if rtype == "simulation":
                self._drop_resent_simulations()
            else:
                self._dedupe(rtype, key)
        self._commit()

    def _dedupe(self, rtype: str, key: str) -> None:
        """One record per key: a repeat with the same content (fingerprint) is a duplicate and dropped,
        one with other content a conflict and quarantined, whether the first is in the store or
        earlier in this batch."""
        lake = self.store.table_sql(TABLES[rtype][0], self.manifests)
        run(self.con, f"""
            WITH batch AS (SELECT seq, {key}, fingerprint AS h,
                                  row_number() OVER (PARTITION BY {key} ORDER BY seq) AS k
                           FROM parsed WHERE reason IS NULL AND rtype = '{rtype}'),
                 stored AS (SELECT {key}, any_value(fingerprint) AS h FROM ({lake}) GROUP BY ALL),
                 earlier AS (SELECT {key}, h, 'the store' AS place FROM stored
                             UNION ALL
                             SELECT {key}, h, 'an earlier line of this batch' FROM batch
                             WHERE k = 1 AND ({key}) NOT IN (SELECT ({key}) FROM stored)),
                 repeats AS (SELECT b.seq, b.h = e.h AS same, e.place FROM batch b JOIN earlier e USING ({key})
                             WHERE b.k > 1 OR e.place = 'the store')
            UPDATE parsed SET reason = CASE WHEN r.same THEN 'duplicate' ELSE 'conflicting record' END,
                              hint = CASE WHEN r.same THEN 'the same {rtype} as ' || r.place
                                          ELSE '{rtype} with the same {key.replace(", ", " and ")} as in ' || r.place
                                               || ', but other values' END
            FROM repeats r WHERE parsed.seq = r.seq AND parsed.rtype = '{rtype}'""")

    def _drop_resent_simulations(self) -> None:
        """Identical simulations can be genuine (a planner that evaluates the same action twice), so
        a fingerprint keeps as many copies as the one source that holds the most: copies the store
        already has, and copies in other files of this batch (a re-sent or recompressed log), go."""
        lake = self.store.table_sql("simulations", self.manifests)
        run(self.con, f"""
            WITH batch AS (SELECT seq, file_index, fingerprint FROM parsed WHERE reason IS NULL AND rtype = 'simulation'),
                 stored AS (SELECT fingerprint, count(*) AS c FROM ({lake}) GROUP BY 1),
                 counts AS (SELECT fingerprint, file_index, count(*) AS n FROM batch GROUP BY ALL),
                 source AS (SELECT fingerprint, first(file_index ORDER BY n DESC, file_index) AS file_index
                            FROM counts GROUP BY 1),
                 ranked AS (SELECT seq, fingerprint, file_index,
                                   row_number() OVER (PARTITION BY fingerprint, file_index ORDER BY seq) AS k FROM batch),
                 resent AS (SELECT r.seq FROM ranked r JOIN source s USING (fingerprint) LEFT JOIN stored USING (fingerprint)
                            WHERE r.file_index <> s.file_index OR r.k <= coalesce(stored.c, 0))
            UPDATE parsed SET reason = 'duplicate',
                              hint = 'the same simulation is in the store or in another file of this batch'
            WHERE seq IN (SELECT seq FROM resent)""")

    def _table(self, name: str, data: pa.Table) -> None:
        self.con.register("arrow_data", data)
        try:
            run(self.con, f"CREATE TABLE {name} AS SELECT * FROM arrow_data")
        finally:
            self.con.unregister("arrow_data")

    def _check_dims(self) -> None:
        """Fix each (world, encoder)'s latent dimension and quarantine vectors of another length."""
        known = self.store.known_dims(self.manifests)
        rows = self.con.execute("""
            SELECT world, encoder, len(state) AS dim, count(*) AS n FROM parsed
            WHERE reason IS NULL AND state IS NOT NULL GROUP BY ALL ORDER BY n DESC, dim""").fetchall()
        dims: dict[tuple[str, str], int] = {}
        self.new_dims = []
        for world, encoder, dim, _ in rows:
            if (world, encoder) in dims:
                continue
            fixed = self.settings.dims.get(world) or known.get((world, encoder))
            dims[(world, encoder)] = fixed or dim
            if (world, encoder) not in known:
                self.new_dims.append({"world": world, "encoder": encoder, "dim": fixed or dim})
        if not dims:
            return
        self.con.register("dims_arrow", pa.Table.from_pylist([{"world": w, "encoder": e, "dim": d} for (w, e), d in dims.items()]))
        for vec in ("state", "predicted"):
            run(self.con, f"""UPDATE parsed SET reason = 'wrong vector length',
                hint = '"{vec}" has ' || len(parsed.{vec}) || ' values, but world "' || parsed.world || '" (encoder "'
                       || parsed.encoder || '") has dimension ' || d.dim
                FROM dims_arrow d WHERE parsed.reason IS NULL AND parsed.world = d.world AND parsed.encoder = d.encoder
                  AND parsed.{vec} IS NOT NULL AND len(parsed.{vec}) <> d.dim""")

    # 6. commit

    def _commit(self) -> None:
        con, staging = self.con, self.home.tmp / self.id
        staging.mkdir(parents=True)
        ingested_at = self.now.isoformat()
        files: dict[str, list[str]] = {}
        for rtype, (table, cols) in TABLES.items():
            select = ", ".join(f"p.{quote(c)}" for c in cols)
            n = self._write(staging, table, f"""
                SELECT {select}, p.date, f.source_file, p.source_line, '{self.id}' AS batch,
                       '{ingested_at}'::TIMESTAMPTZ AS ingested_at
                FROM parsed p JOIN files f USING (file_index)
                WHERE p.reason IS NULL AND p.rtype = '{rtype}'""", ("world", "date"))
            if n:
                self.report.records[rtype] = n
        self._table("file_quarantine", pa.Table.from_pylist(self.file_quarantine, schema=pa.schema([
            ("source_file", pa.string()), ("source_line", pa.int64()), ("type", pa.string()), ("episode_id", pa.string()),
            ("reason", pa.string()), ("hint", pa.string()), ("raw", pa.string()), ("raw_bytes", pa.int64())])))
        quarantine_sql = f"""
            SELECT *, '{self.id}' AS batch, '{ingested_at}'::TIMESTAMPTZ AS ingested_at,
                   '{self.now.date()}'::DATE AS date FROM (
              SELECT f.source_file, p.source_line, p.rtype AS type, p.episode_id, p.reason, p.hint,
                     coalesce(p.raw, {canonical_json()}) AS raw, coalesce(p.raw_bytes, 0) AS raw_bytes
              FROM parsed p JOIN files f USING (file_index) WHERE p.reason IS NOT NULL AND p.reason <> 'duplicate'
              UNION ALL SELECT * FROM file_quarantine)"""
        self._write(staging, "quarantine", quarantine_sql, ("date",))
        self.report.duplicates = con.execute("SELECT count(*) FROM parsed WHERE reason = 'duplicate'").fetchall()[0][0]
        self.report.quarantined = dict(con.execute(f"SELECT reason, count(*) FROM ({quarantine_sql}) GROUP BY 1 ORDER BY 2 DESC").fetchall())
        for i, n_ok, n_bad in con.execute("""SELECT file_index, count(*) FILTER (reason IS NULL),
                count(*) FILTER (reason IS NOT NULL AND reason <> 'duplicate') FROM parsed GROUP BY 1""").fetchall():
            self.entries[i]["records"], self.entries[i]["quarantined"] = n_ok, n_bad
        for row in self.file_quarantine:
            entry = next(e for e in self.entries if e["path"] == row["source_file"])
            entry["quarantined"] += 1
        for table_dir in staging.iterdir():
            files[table_dir.name] = sorted(str(p.relative_to(staging)) for p in table_dir.rglob("*.parquet"))
        faults.point("ingest.commit")
        self.store.commit({
            "batch": self.id, "committed_at": datetime.now(timezone.utc).isoformat(), "schema_version": records.SCHEMA_VERSION,
            "files": files, "ledger": self.entries, "dims": self.new_dims, "records": self.report.records,
            "quarantined": self.report.quarantined,
        })
        self.report.batch = self.id

    def _write(self, staging: Path, table: str, sql: str, partition: tuple[str, ...]) -> int:
        """Write the rows of `sql` as Parquet under `staging/table/<k>=<v>/...`; returns the row count.

        One file per partition and encoder, so that each file holds one latent dimension and its
        vectors are stored as fixed-size float32 lists; a large group is split over two files written
        at once (pyarrow's writer uses one core, and writes twice as fast as DuckDB's COPY).
        """
        vectors = [c for c in ("state", "predicted") if c in columns(table)]
        keys = list(partition) + (["encoder"] if vectors else [])
        dims = ", ".join(f"max(len({v})) AS {v}" for v in vectors)
        groups = run(self.con, f"SELECT {', '.join(keys)}, count(*) {', ' + dims if dims else ''} FROM ({sql}) GROUP BY ALL")
        jobs = []
        for n, group in enumerate(groups):
            values, rows, sizes = group[: len(keys)], group[len(keys)], group[len(keys) + 1 :]
            fixed = ", ".join(f"{v}::FLOAT[{d}] AS {v}" for v, d in zip(vectors, sizes) if d)
            where = " AND ".join(f"{k} IS NOT DISTINCT FROM ?" for k in keys)
            select = f"* REPLACE ({fixed})" if fixed else "*"
            folder = staging / table
            for key, value in zip(partition, values):
                folder /= f"{key}={urllib.parse.quote(str(value), safe='')}"
            folder.mkdir(parents=True, exist_ok=True)
            parts = 2 if rows >= 10_000 else 1
            # Arrow batches of about 16 MiB whatever the latent size, so that the writers' memory is bounded.
            batch_rows = max(1024, WRITE_BATCH_BYTES // (256 + 4 * sum(d or 0 for d in sizes)))
            for part in range(parts):
                query = f"SELECT {select} FROM ({sql}) WHERE {where} AND ((coalesce(source_line, 0) % {parts}) + {parts}) % {parts} = {part}"
                jobs.append((folder / f"{self.id}_{n}_{part}.parquet", query, list(values), batch_rows))
        with ThreadPoolExecutor(max_workers=2) as pool:
            counts = list(pool.map(lambda job: self._write_file(table, vectors, *job), jobs))
        return sum(counts)

    def _write_file(self, table: str, vectors: list[str], path: Path, query: str, params: list[Any],
                    batch_rows: int) -> int:
        reader = self.con.cursor().sql(query, params=params).to_arrow_reader(batch_rows)
        schema = reader.schema.with_metadata({"dmn_table": table})
        # Dictionaries for the text columns only (trying them on latents costs a third of the write);
        # byte-stream-split latents compress better.
        text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        rows = 0
        with pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=text,
                              use_byte_stream_split=[f"{v}.list.element" for v in vectors]) as writer:
            for batch in reader:
                writer.write_batch(batch.replace_schema_metadata(schema.metadata))
                rows += batch.num_rows
        fsync(path)  # on disk, with its folder entry, before the manifest that names it
        fsync(path.parent)
        faults.point("ingest.staged")
        return rows


# -- reading -------------------------------------------------------------------------------------------


def _read_chunks(f: Any, hasher: Any | None, chunk: int, limit: int, block_size: int) -> Iterator[tuple[str, Any]]:
    """Events from a byte stream: ("lines", (complete lines, their offsets)), ("long", (size, head)) for a line over
    `limit` bytes (never held whole), ("long_tail", (size, head, hasher before it)) when such a line
    has no newline yet, then ("tail", unterminated bytes) and ("error", exception) if reading failed.

    Reads `block_size` bytes at a time (small for gzip, so that a damaged file loses little before
    the damage) and yields complete lines once `chunk` bytes have gathered. Hashes everything it
    yields except the tail (when given a hasher).
    """
    update = hasher.update if hasher is not None else (lambda data: None)
    pending: list[bytes] = []  # blocks not yielded yet
    pending_size = since_newline = 0
    long_line: list[Any] | None = None  # [bytes so far, head]
    before_long = None  # the hasher before the over-long line, should the line turn out unfinished
    error: Exception | None = None
    while True:
        try:
            block = f.read(block_size)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:  # damaged gzip: end here, keep what came before
            block, error = b"", exc
        eof = not block
        if long_line is not None and block:
            end = block.find(b"\n")
            part = block if end < 0 else block[: end + 1]
            update(part)
            long_line[0] += len(part)
            if end < 0:
                continue
            yield "long", tuple(long_line)
            long_line, block = None, block[end + 1 :]
        if block:
            pending.append(block)
            pending_size += len(block)
            newline = block.rfind(b"\n")
            since_newline = since_newline + len(block) if newline < 0 else len(block) - newline - 1
        too_long = since_newline > limit
        if pending and (pending_size >= chunk or too_long or not block):
            data = b"".join(pending)
            last = data.rfind(b"\n")
            rest = data[last + 1 :]
            pending, pending_size = ([rest] if rest else []), len(rest)
            if last >= 0:
                update(memoryview(data)[: last + 1])
                yield "lines", _split_lines(data[: last + 1])
            if too_long:
                before_long = hasher.copy() if hasher is not None else None
                update(rest)
                long_line, pending, pending_size, since_newline = [len(rest), rest[:4096]], [], 0, 0
        if eof:
            break
    if long_line is not None:  # the over-long line runs to the end of the stream: its writer may not be done
        yield "long_tail", (*long_line, before_long)
    yield "tail", b"".join(pending)
    if error is not None:
        yield "error", error


def _split_lines(block: bytes) -> tuple[bytes, np.ndarray]:
    """The block and the offsets of its lines (starts, then the end); numpy finds the newlines."""
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10) + 1
    return block, np.concatenate([[0], ends]).astype(np.int64)


def _prefetch(events: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run `events` in a thread, `depth` items ahead of the consumer (reading overlaps parsing)."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def produce() -> None:
        try:
            for item in events:
                items.put(("ok", item))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            items.put(("raise", exc))
        items.put(("ok", done))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    while True:
        kind, item = items.get()
        if kind == "raise":
            raise item
        if item is done:
            break
        yield item
    thread.join()


# -- helpers -----------------------------------------------------------------------------------------


def _lines_table(lines: list[bytes], numbers: list[int]) -> pa.Table:
    return pa.table({"line": pa.array(numbers, pa.int64()), "raw": pa.array(lines, pa.large_binary())})


def _hash_prefix(f: Any, n: int, hasher: Any) -> Any:
    remaining = n
    while remaining > 0:
        block = f.read(min(remaining, 1 << 24))
        if not block:
            break
        hasher.update(block)
        remaining -= len(block)
    return hasher


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
        return True
    except ValueError:
        return False
