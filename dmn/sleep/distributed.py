"""The night's reading on a Ray cluster (`[engine] kind = "ray"`): a world's window read by tasks; the rest of
the night as the local engine runs it.

  1. steps     a task per shard of the episode ids (a hash, `[engine] key_shards` of them, as ingest's): the
               shard's labelled steps of the window, newest first, `max_decisions` at most, without latents
               (`dmn.sleep.experience.labelled_steps`). Every figure of a step comes from its own episode's
               records (System 2's best, what an audit stands for), so a shard needs no other; each task
               reads the window's keys and scalars, not its latents.
  2. newest    the driver: the `max_decisions` newest of them all, numbered (`newest`)
  3. latents   a task per shard of the lake's batches, as many, of about equal size: the latents and
               simulations of those steps that its batches hold (`latents`), so each latent is read once
  4. the driver puts a step's candidates in the local engine's order and builds the night's `Experience`

The `Experience` is the local engine's, row for row: from the same lake, the same bundle (up to the order of
a step's candidates identical in action, score and veto, which the local engine leaves to DuckDB). Every
task reads the files the driver listed when the night began, so a batch committed meanwhile is tomorrow's.
Tasks only read: Ray runs one again whose worker or node died, and one that fails for good fails the
world's night in one line, with nothing published. Their results (the window's labelled steps, at most
`max_decisions`, and their latents) come back through Ray's object store.
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
LATENT_TABLES = ("decisions", "simulations")
"""Those of them with latents, read once, by shards of the batches."""


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
    chosen = ray.put(steps.select(["episode_id", "step", "i"]))  # once in the object store, for every task
    read = gather(ray, [task(_latents).remote(root, __version__, {t: store.table_sql(t, part) for t in LATENT_TABLES},
                                              world, encoder, chosen)
                        for part in _batch_shards(manifests, shards)], say, f"{world}: reading latents", STOPPED)
    state = pa.concat_tables([r[0] for r in read]).sort_by("i")  # a step's decision is in one batch
    return experience(world, encoder, steps, state["state"], _in_order(pa.concat_tables([r[1] for r in read])),
                      settings, now)


def _batch_shards(manifests: list[dict[str, Any]], shards: int) -> list[list[dict[str, Any]]]:
    """The batches with decisions or simulations, dealt into at most `shards` groups of about equal records,
    largest first, each to the group with the fewest."""
    def size(m: dict[str, Any]) -> int:
        return sum(m.get("records", {}).get(t, 0) for t in ("decision", "simulation")) or 1

    groups: list[list[dict[str, Any]]] = [[] for _ in range(shards)]
    load = [0] * shards
    for m in sorted((m for m in manifests if any(m["files"].get(t) for t in LATENT_TABLES)), key=size, reverse=True):
        k = load.index(min(load))
        groups[k].append(m)
        load[k] += size(m)
    return [g for g in groups if g]


def _in_order(sims: pa.Table) -> pa.Table:
    """The simulations read by several tasks, in the local engine's order (`latents`): by step, then action
    and score; a step's candidates may lie in several batches."""
    keys = sims.select(["i", "action", "action_vector", "score", "vetoed"])
    con = connect()
    con.register("keys", keys.append_column("pos", pa.array(np.arange(len(keys), dtype=np.int64))))
    order = con.sql("SELECT pos FROM keys ORDER BY i, action, action_vector, score, vetoed, pos").fetchnumpy()["pos"]
    return sims.take(order)


# -- the tasks (run on the cluster's nodes) ---------------------------------------------------------------------

def _steps(root: str, version: str, views: dict[str, str], world: str, encoder: str, since: float, limit: int,
           shard: int, shards: int) -> pa.Table:
    """One shard's labelled steps (`labelled_steps`)."""
    node_check(root, version)
    with _session(views) as con:
        return labelled_steps(con, world, encoder, since, limit, shard, shards)


def _latents(root: str, version: str, views: dict[str, str], world: str, encoder: str, steps: pa.Table
             ) -> tuple[pa.Table, pa.Table]:
    """The latents and simulations of `steps` that the batches of `views` hold (`latents`)."""
    node_check(root, version)
    with _session(views) as con:
        return latents(con, world, encoder, steps)


def _session(views: dict[str, str]) -> duckdb.DuckDBPyConnection:
    """A DuckDB session whose lake views read the files the driver listed."""
    con = connect()
    for name, sql in views.items():
        run(con, f"CREATE VIEW {quote(name)} AS {sql}")
    return con

