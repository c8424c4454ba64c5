"""Compaction: runs of small batches merged into one, so that a home of a year reads as fast as one of a week.

Every ingest commits a batch of a few files per world; after a year of nights DuckDB opens thousands of small
files for every question. After each ingest, the oldest run of `[ingest] compact_batches` consecutive batches of
one level that fit together in `compact_mib` becomes one batch of the next level (an ingest's batch is of level
0), like the tiers of a log-structured store: a year of nightly batches is a few dozen, and a row is rewritten
once per level, not every time a batch is added. The merged batch has one file per table, world and latent
shape, the rows
unchanged (each keeps the batch it came from in its `batch` column), the manifest the union of theirs (ledger
rows keep their own batch and commit time, so repeats and retention judge them as before). The merged batch
is named for the newest batch it replaces, so that the catalog's order, which the ledger relies on, holds.

It commits like any batch: the merged files are staged, then the manifest that `replaces` the old batches is
renamed into the catalog (from then on readers skip the manifests it replaces; recovery removes them), then
its files are rolled forward. The replaced files stay in the lake until no night can still be reading them:
a later ingest deletes them once `SWEEP_AFTER_SECONDS` have passed and the consolidate lock is free.
"""

from __future__ import annotations

import os
import secrets
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dmn import faults
from dmn.config import IngestSettings
from dmn.errors import Busy
from dmn.home import Home, fsync
from dmn.lake.commit import batch_rows, write_file
from dmn.lake.duck import connect, quote, run
from dmn.lake.resolve import FIXES
from dmn.lake.store import Store, column_tag, parquet_scan
from dmn.records import LAKE_TABLES

SWEEP_AFTER_SECONDS = 600
"""How long the files a compaction replaced stay in the lake, for the readers that listed them before it."""


def compact(home: Home, store: Store, settings: IngestSettings, now: datetime) -> dict[str, int]:
    """Delete the files earlier compactions replaced, if no night can be reading them; then merge the oldest
    run of small batches into one. Returns what was merged: batches, and the files they had and now have.
    The caller holds the ingest lock."""
    manifests = store.manifests()
    _sweep(home, manifests, now)
    batches = _oldest_run(home, manifests, settings)
    if not batches:
        return {}
    newest = batches[-1]["batch"]
    batch = newest
    while batch == newest:  # the timestamp of the newest it replaces, so that it sorts in its place
        batch = newest[:-6] + secrets.token_hex(3)
    merged = _merge(home, store, settings, batches, batch, now)
    store.commit(merged)
    faults.point("compact.committed")
    for m in batches:
        (home.catalog / f"{m['batch']}.json").unlink(missing_ok=True)
    fsync(home.catalog)
    return {"batches": len(batches), "files": sum(len(f) for m in batches for f in m["files"].values()),
            "files_after": sum(len(f) for f in merged["files"].values())}


def _oldest_run(home: Home, manifests: list[dict[str, Any]], settings: IngestSettings) -> list[dict[str, Any]]:
    """The oldest `compact_batches` consecutive batches of one level whose files fit together in `compact_mib`."""
    if settings.compact_batches < 2 or len(manifests) < settings.compact_batches:
        return []
    limit, batches, size = settings.compact_mib << 20, [], 0
    for m in manifests:
        b = sum(_size(home.lake / rel) for rels in m["files"].values() for rel in rels)
        if batches and (m.get("level", 0) != batches[0].get("level", 0) or size + b > limit):
            batches, size = [], 0  # a run ends at another level, or where it would not fit
        if b <= limit:
            batches, size = [*batches, m], size + b
            if len(batches) == settings.compact_batches:
                return batches
    return []


def _merge(home: Home, store: Store, settings: IngestSettings, batches: list[dict[str, Any]], batch: str,
           now: datetime) -> dict[str, Any]:
    """Stage the merged files of `batches` under `<home>/tmp/<batch>/`; returns the manifest that commits them."""
    staging = home.tmp / batch
    staging.mkdir(parents=True)
    con = connect(settings.memory_limit, home.tmp)
    files: dict[str, list[str]] = {}
    tags: dict[str, set[str]] = {}
    for table in LAKE_TABLES:
        groups: dict[tuple[str, tuple], list[str]] = {}  # (world folder, latent shapes): files, oldest first
        for rel in (rel for m in batches for rel in m["files"].get(table, [])):
            schema = pq.read_schema(home.lake / rel)
            shapes = tuple((f.name, f.type.list_size) for f in schema if pa.types.is_fixed_size_list(f.type))
            world = next((part for part in Path(rel).parts if part.startswith("world=")), "")
            groups.setdefault((world, shapes), []).append(str(home.lake / rel))
        for n, ((world, shapes), paths) in enumerate(groups.items()):
            path = staging / table / world / f"{batch}_{n}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            fixed = ", ".join(f"{quote(name)}::FLOAT[{size}] AS {quote(name)}" for name, size in shapes)
            query = f"SELECT * {f'REPLACE ({fixed})' if fixed else ''} FROM ({parquet_scan(paths, by_name=True)})"
            _, names = write_file(con, table, [name for name, _ in shapes], path, query,
                                  batch_rows([size for _, size in shapes]))
            files.setdefault(table, []).append(str(path.relative_to(staging)))
            tags.setdefault(table, set()).add(column_tag(names))
    decisions = [{"world": w, "encoder": e, "batch": b, "last": t} for w, e, b, t in run(con, f"""
        SELECT world, encoder, max(batch), epoch(max(coalesce(ts, ingested_at)))
        FROM ({parquet_scan([str(staging / rel) for rel in files['decisions']], by_name=True)})
        GROUP BY ALL ORDER BY ALL""")] if "decisions" in files else []
    con.close()
    faults.point("compact.staged")
    fixed: dict[str, dict[tuple[str, str], dict[str, Any]]] = {key: {} for key in FIXES}
    for m in batches:
        for key in FIXES:
            for row in m.get(key, []):
                fixed[key].setdefault((row["world"], row["encoder"]), row)
    return {
        "batch": batch, "committed_at": now.isoformat(), "schema_version": max(m.get("schema_version", 0) for m in batches),
        "files": files,
        # one tag per table, as a batch has; tables whose files differ in their columns are read by name
        "columns": {table: next(iter(t)) for table, t in tags.items() if len(t) == 1},
        "ledger": [{**row, "batch": row.get("batch", m["batch"]), "committed_at": row.get("committed_at", m["committed_at"])}
                   for m in batches for row in m["ledger"]],
        **{key: list(rows.values()) for key, rows in fixed.items()},
        "records": dict(sum((Counter(m.get("records", {})) for m in batches), Counter())),
        "decisions": decisions,
        "quarantined": dict(sum((Counter(m.get("quarantined", {})) for m in batches), Counter())),
        "level": batches[0].get("level", 0) + 1,
        "replaces": [m["batch"] for m in batches],
        # theirs, and those of compactions among them not swept yet: no file is left behind unlisted
        "replaced_files": [rel for m in batches for rel in (*(r for rels in m["files"].values() for r in rels),
                                                             *m.get("replaced_files", []))],
    }


def _sweep(home: Home, manifests: list[dict[str, Any]], now: datetime) -> None:
    """Delete the files that compactions committed over `SWEEP_AFTER_SECONDS` ago replaced, unless a night is
    running (it may have listed them before the compaction)."""
    before = (now - timedelta(seconds=SWEEP_AFTER_SECONDS)).isoformat()
    due = [home.lake / rel for m in manifests if m["committed_at"] < before for rel in m.get("replaced_files", [])]
    due = [path for path in due if path.exists()]
    if not due:
        return
    try:
        with home.lock("consolidate"):
            for path in due:
                path.unlink(missing_ok=True)
                _prune_empty(path.parent, home.lake)
    except Busy:
        return


def _prune_empty(folder: Path, root: Path) -> None:
    """Remove `folder` and the folders above it, up to `root`, while they are empty."""
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:  # not empty
            return
        folder = folder.parent


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:  # the caller recovered first; a lost file is `dmn check`'s to report
        return 0

