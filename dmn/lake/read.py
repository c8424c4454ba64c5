"""Read a file's new complete lines: JSONL, gzipped JSONL, Lár audit files and dmn lake Parquet.

`read` turns one planned file (`dmn.lake.plan.Read`) into events for the pipeline: `Lines` to parse,
a `Problem` to quarantine whole (a damaged gzip, a line over `max_line_bytes`, a broken Lár file), and
`Pending` bytes of an unterminated last line that waits for its writer. It moves the file's ledger
entry forward as it goes, so the entry says exactly what the events covered.

Lines are found with numpy, never one record at a time in Python; a thread reads (and hashes) the next
block while the pipeline parses this one.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import queue
import threading
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Generator, Iterator

import duckdb
import numpy as np
import pyarrow as pa

from dmn.config import IngestSettings, LarSettings
from dmn.lake.duck import quote, run
from dmn.lake.lar import audit_to_records
from dmn.lake.plan import Read, hash_prefix
from dmn.records import RECORDS, TABLES

UTF8_BOM = b"\xef\xbb\xbf"
HEAD_BYTES = 4096
"""How much of an over-long line quarantine keeps."""
READ_AHEAD = 1 << 24
"""Bytes of complete lines the reading thread hands over at a time."""


@dataclass
class Lines:
    """Complete lines to parse: a table of `line` (its number in the file) and `raw` (its bytes)."""

    table: pa.Table


@dataclass
class Problem:
    """Something in the file to quarantine as it is, with its reason and a hint."""

    reason: str
    hint: str
    line: int | None = None
    raw: bytes = b""


@dataclass
class Pending:
    """Unterminated bytes at the end of the file, left for the next run (the writer may still be at it)."""

    size: int


Event = Lines | Problem | Pending


def read(todo: Read, settings: IngestSettings, lar: LarSettings, con: duckdb.DuckDBPyConnection) -> Iterator[Event]:
    """The events of one file, from `todo.start` on; `todo.entry` ends at what they covered."""
    kind = todo.entry.kind
    if kind == "jsonl":
        yield from _jsonl(todo, settings)
    elif kind == "jsonl.gz":
        yield from _gzip(todo, settings)
    elif kind == "lar":
        yield from _lar(todo, lar)
    else:
        yield from _parquet(todo, con)


def lines_table(lines: list[bytes], numbers: list[int]) -> pa.Table:
    return pa.table({"line": pa.array(numbers, pa.int64()), "raw": pa.array(lines, pa.large_binary())})


# -- the readers ---------------------------------------------------------------------------------------


def _jsonl(todo: Read, settings: IngestSettings) -> Iterator[Event]:
    entry, hasher = todo.entry, todo.hasher
    with open(todo.path, "rb") as f:
        f.seek(entry.bytes_consumed)
        if entry.bytes_consumed == 0:
            if f.read(len(UTF8_BOM)) == UTF8_BOM:  # Windows editors start files with one
                hasher.update(UTF8_BOM)
                entry.bytes_consumed = len(UTF8_BOM)
            else:
                f.seek(0)
        tail = yield from _stream(f, todo, settings, hasher, 1 << 20)
    if tail.long and not todo.settled:  # an over-long last line still being written: wait for its end
        hasher = tail.long.hasher
        yield Pending(tail.long.size)
    elif tail.long:
        yield _consume_long(todo, settings, tail.long)
    elif tail.data:
        if _is_json(tail.data) or todo.settled:
            hasher.update(tail.data)
            entry.bytes_consumed += len(tail.data)
            entry.lines_consumed += 1
            if _is_json(tail.data):
                yield Lines(lines_table([tail.data], [entry.lines_consumed]))
            else:
                yield Problem("truncated last line (the file ends in the middle of a record)",
                              "the writer stopped mid-record; the rest of the file was ingested",
                              entry.lines_consumed, tail.data)
        else:
            yield Pending(len(tail.data))
    entry.sha256 = hasher.hexdigest()


def _gzip(todo: Read, settings: IngestSettings) -> Iterator[Event]:
    entry = todo.entry
    with open(todo.path, "rb") as raw:
        entry.sha256 = hash_prefix(raw, entry.size, hashlib.sha256()).hexdigest()
    with gzip.open(todo.path, "rb") as f:
        try:
            if f.read(len(UTF8_BOM)) != UTF8_BOM:
                f.seek(0)
        except (EOFError, zlib.error, gzip.BadGzipFile):
            f.seek(0)  # _stream meets the damage again and reports it
        tail = yield from _stream(f, todo, settings, None, 1 << 16)
    if tail.long:
        yield _consume_long(todo, settings, tail.long)
    if tail.error is not None:
        yield Problem("corrupt gzip file", f"decompression failed after line {entry.lines_consumed} ({tail.error}); "
                      "the lines before it were ingested (if a writer was still writing it, the rest lands once the "
                      "file is complete)", entry.lines_consumed + 1, tail.data)
    elif tail.data:
        entry.lines_consumed += 1
        yield Lines(lines_table([tail.data], [entry.lines_consumed]))
    entry.bytes_consumed = entry.size


def _lar(todo: Read, settings: LarSettings) -> Iterator[Event]:
    data = todo.path.read_bytes()
    todo.entry.sha256 = hashlib.sha256(data).hexdigest()
    todo.entry.bytes_consumed = len(data)
    lines, problem = audit_to_records(data, settings, run_name=todo.path.stem)
    if problem:
        yield Problem(*problem, raw=data)
        return
    todo.entry.lines_consumed = len(lines)
    if lines:
        yield Lines(lines_table([line for _, line in lines], [n for n, _ in lines]))


def _parquet(todo: Read, con: duckdb.DuckDBPyConnection) -> Iterator[Event]:
    """A file of a dmn lake (another home's, say): its rows as records, checked like any others."""
    entry = todo.entry
    with open(todo.path, "rb") as f:
        entry.sha256 = hash_prefix(f, entry.size, hashlib.sha256()).hexdigest()
    entry.bytes_consumed = entry.size
    try:
        meta = dict(run(con, "SELECT key::VARCHAR, value::VARCHAR FROM parquet_kv_metadata(?)", [str(todo.path)]))
        rtype = {table: rtype for rtype, (table, _) in TABLES.items()}.get(meta.get("dmn_table", ""))
        if rtype is None:
            yield Problem("not a dmn lake file", "Parquet files must come from a dmn lake (they carry dmn_table "
                          "metadata); write other data as JSONL")
            return
        fields = [f.name for f in RECORDS[rtype].fields]
        pack = ", ".join(f"{quote(c)} := {quote(c)}{'::JSON' if c == 'meta' else ''}" for c in fields)
        table = con.sql(f"SELECT row_number() OVER () AS line, to_json(struct_pack(type := '{rtype}', {pack}))::BLOB AS raw "
                        "FROM read_parquet($file)", params={"file": str(todo.path)}).to_arrow_table()
    except duckdb.Error as exc:
        yield Problem("unreadable Parquet file", str(exc).splitlines()[0])
        return
    entry.lines_consumed = table.num_rows
    yield Lines(table)


# -- streaming a file's lines --------------------------------------------------------------------------


@dataclass
class _Long:
    """A line over the limit, never held whole: its size, its first bytes, and (while it has no newline
    yet) the hasher as it was before it."""

    size: int
    head: bytes
    hasher: Any = None


@dataclass
class _End:
    """How a stream ended: its unterminated bytes, an over-long last line without its newline, a read error."""

    data: bytes = b""
    long: _Long | None = None
    error: Exception | None = None


def _stream(f: BinaryIO, todo: Read, settings: IngestSettings, hasher: Any | None,
            block_size: int) -> Generator[Event, None, _End]:
    """The events of every complete line of `f`; returns how the stream ended."""
    entry, end = todo.entry, _End()
    for item in _prefetch(_blocks(f, hasher, settings.max_line_bytes, block_size)):
        if isinstance(item, _End):
            end = item
        elif isinstance(item, _Long):
            yield _consume_long(todo, settings, item)
        else:
            block, offsets = item
            entry.bytes_consumed += len(block)
            yield from _split(block, offsets, todo, settings)
    return end


def _split(block: memoryview, offsets: np.ndarray, todo: Read, settings: IngestSettings) -> Iterator[Event]:
    """One block of complete lines as a table (and the lines of it over the limit as problems)."""
    entry, limit = todo.entry, settings.max_line_bytes
    ends = offsets[1:]
    first = entry.lines_consumed + 1
    entry.lines_consumed += len(ends)
    numbers = np.arange(first, first + len(ends), dtype=np.int64)
    lengths = np.diff(offsets)
    too_long = lengths > limit + 1
    values = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(block)])
    table = pa.table({"line": numbers, "raw": values})
    for i in np.flatnonzero(too_long):
        yield _too_long(int(numbers[i]), int(lengths[i]), bytes(block[offsets[i]: offsets[i] + HEAD_BYTES]), limit)
    yield Lines(table.filter(pa.array(~too_long)) if too_long.any() else table)


def _consume_long(todo: Read, settings: IngestSettings, long: _Long) -> Problem:
    todo.entry.bytes_consumed += long.size
    todo.entry.lines_consumed += 1
    return _too_long(todo.entry.lines_consumed, long.size, long.head, settings.max_line_bytes)


def _too_long(line: int, size: int, head: bytes, limit: int) -> Problem:
    return Problem("line too long", f"line is {size:,} bytes, over the limit of {limit:,} (ingest.max_line_bytes); "
                   f"its first {HEAD_BYTES // 1024} KiB are kept", line, head)


def _blocks(f: BinaryIO, hasher: Any | None, limit: int, block_size: int) -> Iterator[Any]:
    """From a byte stream: (block of complete lines, their offsets), a `_Long` for a line over `limit` bytes
    (never held whole), and last an `_End`.

    Reads `block_size` bytes at a time (small for gzip, so that a damaged file loses little before the
    damage) and hands over complete lines once `READ_AHEAD` bytes have gathered. Hashes everything it
    hands over except the unterminated end (when given a hasher).
    """
    update = hasher.update if hasher is not None else (lambda data: None)
    pending: list[bytes] = []  # blocks not handed over yet
    pending_size = since_newline = 0
    long: _Long | None = None  # the over-long line being read past
    error: Exception | None = None
    while True:
        try:
            block = f.read(block_size)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:  # damaged gzip: end here, keep what came before
            block, error = b"", exc
        eof = not block
        if long is not None and block:
            newline = block.find(b"\n")
            part = block if newline < 0 else block[: newline + 1]
            update(part)
            long.size += len(part)
            if newline < 0:
                continue
            yield _Long(long.size, long.head)
            long, block = None, block[newline + 1:]
        if block:
            pending.append(block)
            pending_size += len(block)
            newline = block.rfind(b"\n")
            since_newline = since_newline + len(block) if newline < 0 else len(block) - newline - 1
        too_long = since_newline > limit
        if pending and (pending_size >= READ_AHEAD or too_long or not block):
            data = b"".join(pending)
            last = data.rfind(b"\n")
            rest = data[last + 1:]
            pending, pending_size = ([rest] if rest else []), len(rest)
            if last >= 0:
                update(memoryview(data)[: last + 1])
                ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8, count=last + 1) == 10) + 1
                yield memoryview(data)[: last + 1], np.concatenate([[0], ends]).astype(np.int64)  # not a copy
            if too_long:
                before = hasher.copy() if hasher is not None else None
                update(rest)
                long, pending, pending_size, since_newline = _Long(len(rest), rest[:HEAD_BYTES], before), [], 0, 0
        if eof:
            break
    yield _End(b"".join(pending), long, error)


def _prefetch(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """`items`, produced by a thread `depth` ahead of the consumer (reading overlaps parsing).

    However the consumer stops (done, an exception, the generator closed), the thread ends with it.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                ready.put((item, None))
                if stop.is_set():
                    return
            ready.put((done, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            ready.put((done, exc))

    thread = threading.Thread(target=produce, name="dmn-ingest-read", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # make room for a put the thread is blocked on, until it sees `stop`
            try:
                ready.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
        return True
    except ValueError:
        return False
