"""Ingest on a Ray cluster (`[engine] kind = "ray"`): the local pipeline's stages as Ray tasks, one batch.

  1. plan      the driver: which files, and which of their bytes, are new (the ledger, as locally)
  2. parse     a task per shard of the files (`[engine] shard_mib` of new bytes): read and parse them with the
               per-record rules; its rows staged in the home, split by a hash of their episode id
  3. tally     a task per key shard (`key_shards`): the episode rules over its rows, then what they say of
               each world's latent dimension and kind of action
  4. settle    the driver: the dimensions and kinds of action, from the tallies, the lake and the settings
  5. resolve   a task per key shard: the episode rules again, the dimensions and kinds, repeats within the
               batch and against the lake; its share of the batch's files, staged as locally
  6. commit    the driver: one manifest for all the shards' files, through the same catalog and ledger

Every rule across records is about one episode's records (its start, its steps' repeats, identical
simulations, which share their episode id), so a key shard sees all that it needs, and no node the whole
batch. Rows keep the order the local engine gives them (`seq`: the file shard's number, then reading
order), so "first" means the same, and the lake and quarantine hold what the local engine writes from the
same logs, record for record (in more files). A task writes only its own names under the batch's staging,
starting over if it ran before, so Ray may retry one whose worker or node died; nothing is visible until
the driver commits. Tasks are plain functions: Ray schedules them, retries them and moves their small
results; the rows go through the shared home, not the object store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import time
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import duckdb

from dmn.cluster import RETRIES, connected, gather, key_shards, node_check
from dmn.config import Settings
from dmn.home import Home
from dmn.lake import resolve
from dmn.lake.commit import Staged, finish, stage
from dmn.lake.duck import run, text
from dmn.lake.parse import Parser
from dmn.lake.plan import Ledger, Read, discover, hash_prefix, retire
from dmn.lake.store import Store, new_batch, parquet_scan
from dmn.progress import Progress
from dmn.version import __version__

SEQ_SHIFT = 40
"""A row's `seq` is its file shard's number shifted by this many bits, plus its place in the shard: the local
engine's reading order, as long as a shard has under 2**40 lines."""
STOPPED = "ingest stopped, nothing was committed"


def batch(home: Home, settings: Settings, store: Store, paths: list[Path], report: Any, say: Progress) -> None:
    """One batch of every new line of `paths`, read, parsed and resolved by tasks on the cluster, committed here.
    `report` is the run's `dmn.lake.ingest.IngestReport`."""
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        report.stages[stage] = round(time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    now = datetime.now(timezone.utc)
    manifests = store.manifests()
    ledger = Ledger(home, manifests)
    files, skipped = discover(paths, home)
    skips = Counter(reason for _, reason in skipped)
    todos: list[Read] = []
    unchanged: list[Path] = []
    for path in files:
        if (todo := ledger.todo(path, settings.ingest.settle_seconds, skips, unchanged)) is not None:
            todos.append(dataclasses.replace(todo, hasher=None))  # a task hashes the consumed part again
    report.skipped = dict(skips)
    lap("plan")
    with connected(settings.engine) as ray:
        lap("connect")
        report.retired = retire(home, settings.ingest, ledger, unchanged, now)
        if not todos:
            return
        batch_id = new_batch(now)
        root, staging = str(home.root), home.tmp / batch_id
        keys = key_shards(ray, settings.engine)
        shards = _shards(todos, settings.engine.shard_mib << 20)
        task = ray.remote(max_retries=RETRIES)
        read = gather(ray, [task(_parse).remote(root, __version__, settings, batch_id, i, shard, keys)
                            for i, shard in enumerate(shards)], say, "parsing", STOPPED)
        entries = sorted((e for r in read for e in r["entries"]), key=lambda e: e[0])
        problems = [p for r in read for p in r["problems"]]
        report.pending_bytes = sum(r["pending"] for r in read)
        report.files_read = len(entries)
        report.bytes_read = sum(e.bytes_consumed - start for _, e, start in entries)
        lap("parse")
        if not entries:
            shutil.rmtree(staging, ignore_errors=True)
            return
        tallies = gather(ray, [task(_tally).remote(root, __version__, settings, batch_id, k) for k in range(keys)],
                         say, "resolving episodes", STOPPED)
        lap("tally")
        settled, fixes = resolve.settle(resolve.add_tallies(tallies), store, manifests, settings)
        sources = [(i, e.path) for i, e, _ in entries]
        staged = gather(ray, [task(_resolve).remote(root, __version__, settings, batch_id, k, now, sources, settled,
                                                    problems if k == 0 else []) for k in range(keys)],
                        say, "resolving repeats and staging", STOPPED)
        lap("resolve")
    for leftover in ("parsed", "spill"):
        shutil.rmtree(staging / leftover, ignore_errors=True)
    done = finish(store, batch_id, [e for _, e, _ in entries], [i for i, _, _ in entries], problems, fixes, staged)
    report.batch, report.records, report.quarantined, report.duplicates = (
        batch_id, done.records, done.quarantined, done.duplicates)
    lap("commit")


def _shards(todos: list[Read], size: int) -> list[list[tuple[int, Read]]]:
    """The files in their order, numbered, cut into runs of about `size` new bytes (a larger file is a run)."""
    shards: list[list[tuple[int, Read]]] = [[]]
    filled = 0
    for i, todo in enumerate(todos):
        if shards[-1] and filled >= size:
            shards.append([])
            filled = 0
        shards[-1].append((i, todo))
        filled += todo.entry.size - todo.start
    return shards


# -- the tasks (run on the cluster's nodes) ---------------------------------------------------------------------

def _parse(root: str, version: str, settings: Settings, batch_id: str, shard: int, todos: list[tuple[int, Read]],
           keys: int) -> dict[str, Any]:
    """Read and parse one shard of the files; stage its rows by key shard. Returns its ledger entries
    (file number, entry, where reading started), the files' quarantine rows, and pending bytes."""
    node_check(root, version)
    home = Home.resolve(root)
    out = home.tmp / batch_id / "parsed" / f"p{shard}"
    shutil.rmtree(out, ignore_errors=True)  # a retried task starts over
    out.parent.mkdir(parents=True, exist_ok=True)
    entries, problems, pending = [], [], 0
    with Parser(settings.ingest, home.tmp / batch_id / "spill" / f"p{shard}", first_seq=shard << SEQ_SHIFT) as parser:
        for i, todo in todos:
            todo = _resumed(todo)
            kept, found, waiting = parser.read(i, todo, settings)
            problems += found
            pending += waiting
            if kept:
                entries.append((i, todo.entry, todo.start))
        parser.flush()
        run(parser.con, f"""COPY (SELECT *, hash(coalesce(episode_id, '')) % {keys} AS key_shard FROM parsed)
                            TO {text(out)} (FORMAT parquet, PARTITION_BY (key_shard))""")
    return {"entries": entries, "problems": problems, "pending": pending}


def _tally(root: str, version: str, settings: Settings, batch_id: str, key: int) -> dict[str, list[tuple]]:
    """The episode rules over one key shard's rows; what they say of dimensions and kinds of action."""
    node_check(root, version)
    with _shard_rows(Home.resolve(root), settings, batch_id, key) as (con, lake):
        resolve.episodes(con, lake)
        return resolve.tallies(con)


def _resolve(root: str, version: str, settings: Settings, batch_id: str, key: int, now: datetime,
             sources: list[tuple[int, str]], settled: dict[str, Any], problems: list[dict[str, Any]]) -> Staged:
    """Every rule across records over one key shard's rows, then its files staged (`dmn.lake.commit.stage`)."""
    node_check(root, version)
    home = Home.resolve(root)
    with _shard_rows(home, settings, batch_id, key) as (con, lake):
        resolve.episodes(con, lake)
        resolve.enforce(con, settled)
        resolve.repeats(con, lake)
        return stage(con, home.tmp / batch_id, batch_id, now, sources, problems, prefix=f"k{key}_")


@contextmanager
def _shard_rows(home: Home, settings: Settings, batch_id: str, key: int
                ) -> Iterator[tuple[duckdb.DuckDBPyConnection, Callable[[str], str]]]:
    """A DuckDB session holding one key shard's parsed rows as `parsed`, and the SELECT of a lake table's rows
    of its episodes (all that its rules compare with)."""
    store = Store(home)
    manifests = store.manifests()
    staged = home.tmp / batch_id / "parsed"
    with Parser(settings.ingest, home.tmp / batch_id / "spill" / f"k{key}") as parser:
        files = sorted(str(p) for p in staged.glob(f"p*/key_shard={key}/*.parquet"))
        if files:
            run(parser.con, f"INSERT INTO parsed BY NAME {parquet_scan(files, by_name=False)}")
        yield parser.con, lambda table: (f"SELECT * FROM ({store.table_sql(table, manifests)}) "
                                         "WHERE episode_id IN (SELECT episode_id FROM parsed)")


def _resumed(todo: Read) -> Read:
    """`todo` with its hasher: the SHA-256 of what earlier batches consumed, to go on from."""
    hasher = hashlib.sha256()
    if todo.start:
        with open(todo.path, "rb") as f:
            hash_prefix(f, todo.start, hasher)
    return dataclasses.replace(todo, hasher=hasher)

