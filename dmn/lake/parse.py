"""Parse: the batch's DuckDB session, where read lines become typed rows of the `parsed` table.

Lines gather across files until `chunk_bytes` are queued, then one DuckDB pass parses them all and
applies the per-record rules (`dmn.lake.rules`): a thousand small episode files cost a few passes, not
a thousand. Every row keeps its file, its line and its order (`seq`), and NULL or a reason.
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from dmn.config import IngestSettings, Settings, size_bytes
from dmn.lake.duck import connect, run
from dmn.lake.plan import Read
from dmn.lake.read import Lines, Pending, Problem, read
from dmn.lake.rules import MACROS, PARSED_COLUMNS, RAW_KEEP_BYTES, parse_sql
from dmn.records import TENSOR_DTYPES

FIRST_PASS_BYTES = 1 << 24
"""The first passes are small (then doubling up to `chunk_bytes`), so that DuckDB starts while the reader
is still on the first chunk."""


class Parser:
    """One ingest run's DuckDB session: `add` lines, then read `parsed` from `con`."""

    def __init__(self, settings: IngestSettings, tmp: Path, first_seq: int = 0):
        """`tmp`: where DuckDB spills; `first_seq`: the first line's `seq` (a Ray shard's own range)."""
        self.con = connect(settings.memory_limit, tmp / "duckdb")
        # A pass over the lines needs a few times their size in DuckDB: keep it well inside the limit.
        self.chunk_bytes = min(settings.chunk_bytes, size_bytes(settings.memory_limit) // 4)
        run(self.con, "SET preserve_insertion_order = false")
        self.con.create_function("dmn_tensor", decode_tensors, ["BLOB", "VARCHAR"], "FLOAT[]", type="arrow",
                                 null_handling="special", side_effects=False)
        run(self.con, MACROS)
        run(self.con, f"CREATE TABLE parsed ({PARSED_COLUMNS})")
        self.sql = parse_sql(settings.future_skew_seconds)
        self.pending: list[pa.Table] = []
        self.pending_bytes = 0
        self.passes = 0
        self.rows = first_seq
        """The next line's `seq`: each line gets its own, in reading order."""

    def __enter__(self) -> Parser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.con.close()

    def add(self, file_index: int, lines: pa.Table) -> None:
        """Queue lines (`line`, `raw`) of the file `file_index` of the batch; parse once enough have gathered."""
        n = lines.num_rows
        self.pending_bytes += lines.nbytes  # before `text`, which shares the bytes of `raw`
        lines = lines.append_column("text", pa.chunked_array([_ascii_text(c) for c in lines["raw"].chunks],
                                                            pa.large_string()))
        lines = lines.append_column("file_index", pa.array(np.full(n, file_index, np.int32)))
        self.pending.append(lines.append_column("seq", pa.array(np.arange(self.rows, self.rows + n, dtype=np.int64))))
        self.rows += n
        if self.pending_bytes >= min(self.chunk_bytes, FIRST_PASS_BYTES << self.passes):
            self.flush()

    def read(self, file_index: int, todo: Read, settings: Settings,
             on_lines: Callable[[pa.Table], None] | None = None) -> tuple[bool, list[dict[str, Any]], int]:
        """Read one planned file (`dmn.lake.read.read`) into the batch as its file `file_index`, telling
        `on_lines` of each block. Returns whether the batch keeps its ledger entry (it consumed something, or
        found something to quarantine), the file's quarantine rows (`dmn.lake.commit.FILE_PROBLEM`), and the
        bytes of an unfinished last line left for the next run."""
        problems, pending = [], 0
        with closing(read(todo, settings.ingest, settings.lar, self.con)) as events:
            for event in events:
                if isinstance(event, Lines):
                    self.add(file_index, event.table)
                    if on_lines:
                        on_lines(event.table)
                elif isinstance(event, Problem):
                    problems.append(_quarantine_row(todo.entry.path, event))
                elif isinstance(event, Pending):
                    pending += event.size
        return todo.entry.bytes_consumed > todo.start or bool(problems), problems, pending

    def flush(self) -> None:
        """Parse what is queued."""
        if not self.pending:
            return
        chunk = pa.concat_tables(self.pending)
        self.pending, self.pending_bytes = [], 0
        self.passes += 1
        # Small record batches let DuckDB spread one chunk over all cores (a chunk of 768-d lines
        # is only a few thousand rows, a single vector otherwise).
        self.con.register("chunk", pa.Table.from_batches(chunk.to_batches(max_chunksize=256), chunk.schema))
        try:
            run(self.con, self.sql)
        finally:
            self.con.unregister("chunk")


def _quarantine_row(source_file: str, problem: Problem) -> dict[str, Any]:
    return {"source_file": source_file, "source_line": problem.line, "type": None, "episode_id": None,
            "reason": problem.reason, "hint": problem.hint,
            "raw": problem.raw[:RAW_KEEP_BYTES].decode("utf-8", "replace"), "raw_bytes": len(problem.raw)}


def _ascii_text(raw: pa.Array) -> pa.Array:
    """The lines as text where they are all ASCII (valid UTF-8 as they are: the same buffers, no copy and no
    check in DuckDB), else NULLs (DuckDB decodes them, and says which are not UTF-8). Logs of numbers and
    base64 are ASCII."""
    raw = raw.cast(pa.large_binary())
    if len(raw) == 0:
        return pa.nulls(0, pa.large_string())
    offsets, data = _offsets(raw), raw.buffers()[2]
    start, end = int(offsets[0]), int(offsets[-1])
    if raw.null_count or (end > start and np.frombuffer(data, np.uint8, end - start, start).max() >= 128):
        return pa.nulls(len(raw), pa.large_string())
    return pa.LargeStringArray.from_buffers(len(raw), raw.buffers()[1], data, offset=raw.offset)


def _offsets(array: pa.Array) -> np.ndarray:
    """The (n + 1) byte offsets of a large binary array's rows into its data buffer (a view, no copy)."""
    return np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset: array.offset + len(array) + 1]


def decode_tensors(blobs: pa.Array | pa.ChunkedArray, dtypes: pa.Array | pa.ChunkedArray) -> pa.Array:
    """DuckDB UDF `dmn_tensor`: raw tensor bytes + dtype name -> FLOAT[] (NULL where they do not fit).

    One view over the column's data buffer where every row is float32 (as the logger writes them), else one
    view per row; no copy of the bytes.
    """
    if isinstance(blobs, pa.ChunkedArray):
        blobs = blobs.combine_chunks()
    blobs = blobs.cast(pa.large_binary())
    dtype_names = dtypes.to_pylist()
    offsets, data = _offsets(blobs), blobs.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8)
    if (len(blobs) and blobs.null_count == 0 and offsets[0] % 4 == 0 and not (np.diff(offsets) % 4).any()
            and np.diff(offsets).all() and all(d in (None, "float32") for d in dtype_names)):
        # The logger's case: float32 everywhere, so the column's bytes are the values, one view for all rows.
        values = raw[offsets[0]: offsets[-1]].view("<f4")
        return pa.ListArray.from_arrays(pa.array(((offsets - offsets[0]) // 4).astype(np.int32)), pa.array(values))
    out: list[np.ndarray | None] = []
    valid = blobs.is_valid().to_numpy(zero_copy_only=False)
    for i, dtype in enumerate(dtype_names):
        code = TENSOR_DTYPES.get(dtype or "float32")
        size = int(offsets[i + 1] - offsets[i])
        if not valid[i] or code is None or size == 0 or size % np.dtype(code).itemsize:
            out.append(None)
            continue
        out.append(raw[offsets[i]: offsets[i + 1]].view(code).astype(np.float32, copy=False))
    return pa.array(out, type=pa.list_(pa.float32()))

