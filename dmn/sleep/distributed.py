"""The night's reading on a Ray cluster (`[engine] kind = "ray"`): a world's window read by tasks over shards
of its episodes; the rest of the night as the local engine runs it.

  1. steps     a task per shard of the episode ids (a hash, `[engine] key_shards` of them, as ingest's): the
               shard's labelled steps of the window, newest first, `max_decisions` at most, without latents
               (`dmn.sleep.experience.labelled_steps`)
  2. newest    the driver: the `max_decisions` newest of them all, numbered (`newest`)
  3. latents   a task per shard: the latents and simulations of its steps among those (`latents`)
  4. the driver builds the night's `Experience` from them, as the local engine does from its one read

Every figure of a step comes from its own episode's records (System 2's best, what an audit stands for), so
a shard needs no other, and the `Experience` is the local engine's, row for row: from the same lake, the
same bundle. Every task reads the files the driver listed when the night began, so a batch committed
meanwhile is tomorrow's. Tasks only read: Ray runs one again whose worker or node died, and one that fails
for good fails the world's night in one line, with nothing published. Their results (the window's
labelled steps, at most `max_decisions`, and their latents) come back through Ray's object store.
"""

from __future__ import annotations

import time
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from dmn.cluster import RETRIES, gather, key_shards, node_check
from dmn.config import ConsolidateSettings, EngineSettings
from dmn.lake.duck import connect, quote, run
from dmn.lake.store import Store
from dmn.progress import Progress
from dmn.sleep.experience import Experience, experience, labelled_steps, latents, newest
from dmn.version import __version__

STOPPED = "the night stopped, nothing was published"
TABLES = ("decisions", "simulations", "outcomes")
"""The lake tables a night reads."""


def select(ray: Any, engine: EngineSettings, say: Progress, store: Store, world: str, encoder: str,
           settings: ConsolidateSettings, now: float | None = None) -> Experience:
    """`dmn.sleep.experience.select`, read by tasks on the cluster `ray` is connected to."""
    now = time.time() if now is None else now
    root, shards = str(store.home.root), key_shards(ray, engine)
    manifests = store.manifests()
    views = {table: store.table_sql(table, manifests) for table in TABLES}
    task = ray.remote(max_retries=RETRIES)
    parts = gather(ray, [task(_steps).remote(root, __version__, views, world, encoder,
                                             now - settings.window_days * 86400, settings.max_decisions, k, shards)
                         for k in range(shards)], say, f"{world}: reading the window", STOPPED)
    steps = newest(parts, settings.max_decisions)
    shard = steps["shard"].to_numpy()
    read = gather(ray, [task(_latents).remote(root, __version__, views, world, encoder,
                                              steps.filter(pa.array(shard == k)).select(["episode_id", "step", "i"]))
                        for k in range(shards) if (shard == k).any()], say, f"{world}: reading latents", STOPPED)
    state = pa.concat_tables([r[0] for r in read]).sort_by("i")  # one row a step
    sims = pa.concat_tables([r[1] for r in read])
    sims = sims.take(np.argsort(sims["i"].to_numpy(), kind="stable"))  # a step's candidates in its shard's order
    return experience(world, encoder, steps, state["state"], sims, settings, now)


# -- the tasks (run on the cluster's nodes) ---------------------------------------------------------------------

def _steps(root: str, version: str, views: dict[str, str], world: str, encoder: str, since: float, limit: int,
           shard: int, shards: int) -> pa.Table:
    """One shard's labelled steps (`labelled_steps`), each marked with the shard's number."""
    node_check(root, version)
    with _session(views) as con:
        part = labelled_steps(con, world, encoder, since, limit, shard, shards)
    return part.append_column("shard", pa.array(np.full(part.num_rows, shard, np.int64)))


def _latents(root: str, version: str, views: dict[str, str], world: str, encoder: str, steps: pa.Table
             ) -> tuple[pa.Table, pa.Table]:
    """The latents and simulations of one shard's `steps` (`latents`)."""
    node_check(root, version)
    with _session(views) as con:
        return latents(con, world, encoder, steps)


def _session(views: dict[str, str]) -> duckdb.DuckDBPyConnection:
    """A DuckDB session whose lake views read the files the driver listed."""
    con = connect()
    for name, sql in views.items():
        run(con, f"CREATE VIEW {quote(name)} AS {sql}")
    return con

