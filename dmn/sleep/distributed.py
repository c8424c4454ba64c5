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
  5. outcomes  a task per shard of the batches: a drawn sample of its imagined consequences, on which the
               driver fits the outcome types; then the types of all of them (`outcome_types_of`), so that
               the consequences, a night's largest latents, never reach the driver but for the sample

The `Experience` is the local engine's, row for row: from the same lake, the same bundle (up to the order of
a step's candidates identical in action, score and veto, which the local engine leaves to DuckDB). Every
task reads the files the driver listed when the night began, so a batch committed meanwhile is tomorrow's.
Tasks only read: Ray runs one again whose worker or node died, and one that fails for good fails the
world's night in one line, with nothing published. Their results (the window's labelled steps, at most
`max_decisions`, their latents, the sample and the types) come back through Ray's object store.
"""

from __future__ import annotations

import time
from typing import Any

import duckdb
import faiss
import numpy as np
import pyarrow as pa

from dmn.cluster import RETRIES, gather, key_shards, node_check
from dmn.config import ConsolidateSettings, EngineSettings
from dmn.lake.duck import connect, quote, run
from dmn.lake.store import Store
from dmn.progress import Progress
from dmn.sleep import experience
from dmn.version import __version__

STOPPED = "the night stopped, nothing was published"
TABLES = ("decisions", "simulations", "outcomes")
"""The lake tables a night reads."""
LATENT_TABLES = ("decisions", "simulations")
"""Those of them with latents, read once, by shards of the batches."""


class Window(experience.Window):
    """`dmn.sleep.experience.Window`, read by tasks on the cluster `ray` is connected to."""

    def __init__(self, ray: Any, engine: EngineSettings, say: Progress, store: Store, world: str, encoder: str,
                 settings: ConsolidateSettings, now: float | None = None):
        self.world, self.encoder, self.settings = world, encoder, settings
        self.now = time.time() if now is None else now
        self.ray, self.say, self.root, self.shards = ray, say, str(store.home.root), key_shards(ray, engine)
        self.task = ray.remote(max_retries=RETRIES)
        manifests = store.manifests()
        self.views = {table: store.table_sql(table, manifests) for table in TABLES}
        self.batches = [{t: store.table_sql(t, part) for t in LATENT_TABLES}
                        for part in _batch_shards(manifests, self.shards)]
        self.chosen: Any = None

    def experience(self) -> experience.Experience:
        s = self.settings
        parts = self._gather(f"{self.world}: reading the window", [
            self.task(_steps).remote(self.root, __version__, self.views, self.world, self.encoder,
                                     self.now - s.window_days * 86400, s.max_decisions, k, self.shards)
            for k in range(self.shards)])
        steps = experience.newest(parts, s.max_decisions)
        self.chosen = self.ray.put(steps.select(["episode_id", "step", "i"]))  # once, for every task
        read = self._gather(f"{self.world}: reading latents", [
            self.task(_latents).remote(self.root, __version__, views, self.world, self.encoder, self.chosen)
            for views in self.batches])
        state = pa.concat_tables([r[0] for r in read]).sort_by("i")  # a step's decision is in one batch
        sims = experience.in_order(pa.concat_tables([r[1] for r in read]))  # a step's candidates may be in several
        return experience.experience(self.world, self.encoder, steps, state["state"], sims, s, self.now)

    def sample(self, share: float, seed: int) -> pa.Table:
        return pa.concat_tables(self._gather(f"{self.world}: sampling imagined consequences", [
            self.task(_sample).remote(self.root, __version__, views, self.world, self.encoder, self.chosen, share,
                                      seed) for views in self.batches]))

    def types(self, index: faiss.Index) -> pa.Table:
        centroids = faiss.serialize_index(index)
        return pa.concat_tables(self._gather(f"{self.world}: typing imagined consequences", [
            self.task(_types).remote(self.root, __version__, views, self.world, self.encoder, self.chosen,
                                     centroids) for views in self.batches]))

    def _gather(self, what: str, refs: list[Any]) -> list[Any]:
        return gather(self.ray, refs, self.say, what, STOPPED)


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


# -- the tasks (run on the cluster's nodes) ---------------------------------------------------------------------

def _steps(root: str, version: str, views: dict[str, str], world: str, encoder: str, since: float, limit: int,
           shard: int, shards: int) -> pa.Table:
    """One shard's labelled steps (`labelled_steps`)."""
    node_check(root, version)
    with _session(views) as con:
        return experience.labelled_steps(con, world, encoder, since, limit, shard, shards)


def _latents(root: str, version: str, views: dict[str, str], world: str, encoder: str, chosen: pa.Table
             ) -> tuple[pa.Table, pa.Table]:
    """The latents and simulations of the `chosen` steps that the batches of `views` hold (`latents`)."""
    node_check(root, version)
    with _session(views, chosen) as con:
        return experience.latents(con, world, encoder)


def _sample(root: str, version: str, views: dict[str, str], world: str, encoder: str, chosen: pa.Table,
            share: float, seed: int) -> pa.Table:
    """The drawn consequences of the `chosen` steps that the batches of `views` hold (`consequences`)."""
    node_check(root, version)
    with _session(views, chosen) as con:
        return experience.consequences(con, world, encoder, share, seed).read_all()


def _types(root: str, version: str, views: dict[str, str], world: str, encoder: str, chosen: pa.Table,
           centroids: np.ndarray) -> pa.Table:
    """The outcome types of the consequences of the `chosen` steps that the batches of `views` hold."""
    node_check(root, version)
    with _session(views, chosen) as con:
        return experience.outcome_types_of(con, world, encoder, faiss.deserialize_index(centroids))


def _session(views: dict[str, str], chosen: pa.Table | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB session whose lake views read the files the driver listed, reading latents of `chosen`."""
    con = connect()
    for name, sql in views.items():
        run(con, f"CREATE VIEW {quote(name)} AS {sql}")
    if chosen is not None:
        experience.choose(con, chosen)
    return con

