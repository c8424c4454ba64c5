"""Ingest: agents' logs in, episodes out.

One run reads every new file (or the new lines of a grown one), parses all of it in DuckDB, checks
every record against the contract in `dmn.records`, and commits the good records to the lake and the
bad ones to quarantine in one batch, with the ledger of what was consumed. Re-running it, or ingesting
a copy of a file, adds nothing.

    >>> report = ingest(Home.resolve("my-home"))          # the inbox   # doctest: +SKIP
    >>> report.records                                     # doctest: +SKIP
    {'episode': 10, 'simulation': 4800, 'decision': 1600, 'outcome': 1600, 'episode_end': 10}

The pipeline, top to bottom (`_batch`):
  1. discover   files to read, and why others are skipped           (dmn.lake.plan)
  2. plan       per file, from the ledger: skip, read the new tail, or read it all
  3. read       complete lines in blocks; problems; unfinished tails (dmn.lake.read)
  4. parse      one DuckDB pass per chunk: the per-record rules      (dmn.lake.parse, dmn.lake.rules)
  5. resolve    the rules across records                             (dmn.lake.resolve)
  6. commit     partitioned Parquet + quarantine + ledger, atomically (dmn.lake.commit, dmn.lake.store)
  7. compact    the oldest run of small batches merged into one      (dmn.lake.compact)

With `[engine] kind = "ray"`, steps 3 to 6 run as Ray tasks over shards of the files and of the episode
ids, and the driver commits the one batch (dmn.lake.distributed).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from dmn import faults
from dmn.cluster import engine_kind
from dmn.config import Settings
from dmn.errors import DmnError
from dmn.home import Home
from dmn.lake.commit import commit
from dmn.lake.compact import compact
from dmn.lake.parse import Parser
from dmn.lake.plan import Entry, Ledger, discover, retire
from dmn.lake.resolve import resolve
from dmn.lake.store import Store, new_batch
from dmn.progress import Progress, quiet


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
    """Bytes of the files that this run consumed."""
    retired: dict[str, int] = field(default_factory=dict)
    """Inbox files deleted or archived (`[ingest] inbox_retention`): files and bytes."""
    compacted: dict[str, int] = field(default_factory=dict)
    """Batches merged into one (`[ingest] compact_batches`), and the lake files they had and have now."""
    seconds: float = 0.0
    """Wall time of the run."""
    stages: dict[str, float] = field(default_factory=dict)
    """With the Ray engine, wall seconds of each stage: plan and commit on the driver, the tasks' stages
    between (`dmn.lake.distributed`; `benchmarks/scale.py` projects from them)."""
    recovered: list[str] = field(default_factory=list)
    """What recovery did to batches a crash had interrupted."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ingest(home: Home, paths: list[str | os.PathLike] | None = None, *, wait: float = 0.0,
           on_progress: Progress | None = None, engine: str | None = None) -> IngestReport:
    """Ingest `paths` (files or folders; default: the home's inbox) into the home's store, telling
    `on_progress` how many of the bytes to read were read. `engine`: "local" or "ray" (default: the
    settings' `[engine] kind`); with Ray, tasks on the cluster read, parse and resolve (`dmn.lake.distributed`).

    Raises `Busy` if another ingest still holds the home after `wait` seconds.
    """
    started = time.perf_counter()
    settings = home.settings()
    engine = engine_kind(engine, settings.engine)
    with home.lock("ingest", wait=wait):
        store = Store(home)
        report = IngestReport(recovered=store.recover())
        faults.point("ingest.recovered")
        given = [Path(p) for p in paths] if paths else [home.inbox]
        try:
            if engine == "ray":  # Ray is an extra: imported only to use it
                from dmn.lake import distributed

                distributed.batch(home, settings, store, given, report, on_progress or quiet)
            else:
                with Parser(settings.ingest, home.tmp) as parser:
                    _batch(home, settings, store, parser, given, report, on_progress or quiet)
        except OSError as exc:  # a full or read-only disk: nothing was committed, the next run cleans up
            raise DmnError(f"ingest stopped, nothing was committed: {exc.strerror or exc} "
                           f"({exc.filename or home.root})") from None
        except duckdb.IOException as exc:  # a lake file named by the catalog is gone
            raise DmnError(f"ingest stopped, nothing was committed: the store is damaged ({exc})") from None
        except duckdb.OutOfMemoryException:
            raise DmnError(f"ingest stopped, nothing was committed: these logs need more memory than [ingest] "
                           f"memory_limit = {settings.ingest.memory_limit!r} allows; raise it in "
                           f"{home.root / 'dmn.toml'}") from None
        try:
            report.compacted = compact(home, store, settings.ingest, datetime.now(timezone.utc))
        except (OSError, duckdb.Error) as exc:  # the batch stands; what was staged is discarded by the next run
            done = f"batch {report.batch} is committed, but" if report.batch else "nothing new was found, and"
            raise DmnError(f"ingest stopped: {done} compacting the store failed, nothing of it was committed: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _batch(home: Home, settings: Settings, store: Store, parser: Parser, paths: list[Path],
           report: IngestReport, say: Progress) -> None:
    """One batch: every new line of `paths` read and parsed, the rules across records, one commit."""
    now = datetime.now(timezone.utc)
    manifests = store.manifests()
    ledger = Ledger(home, manifests)
    files, skipped = discover(paths, home)
    done, total = 0, None  # bytes read, of those to read: counted once there is something to read
    skips = Counter(reason for _, reason in skipped)
    entries: list[Entry] = []
    problems: list[dict[str, Any]] = []
    unchanged: list[Path] = []  # consumed whole by earlier batches: what retention may retire
    for path in files:
        if (todo := ledger.todo(path, settings.ingest.settle_seconds, skips, unchanged)) is None:
            continue

        def lines(table: pa.Table) -> None:
            nonlocal done, total
            total = sum(ledger.unread(p) for p in files) if total is None else total
            done += pc.sum(pc.binary_length(table["raw"])).as_py() + table.num_rows  # and the newlines
            say(f"ingesting {path.name}", done=min(done, total), total=total)

        kept, found, pending = parser.read(len(entries), todo, settings, lines)
        problems += found
        report.pending_bytes += pending
        if kept:  # else only an unfinished tail
            entries.append(todo.entry)
            ledger.consumed(todo.entry)
            report.bytes_read += todo.entry.bytes_consumed - todo.start
        faults.point("ingest.read")
    report.skipped, report.files_read = dict(skips), len(entries)
    report.retired = retire(home, settings.ingest, ledger, unchanged, now)
    parser.flush()
    if not entries:
        return
    fixes = resolve(parser.con, store, manifests, settings)
    batch = new_batch(now)
    done = commit(parser.con, home, store, batch, now, entries, problems, fixes)
    report.batch, report.records, report.quarantined, report.duplicates = (
        batch, done.records, done.quarantined, done.duplicates)
