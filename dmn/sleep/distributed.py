"""The night on a Ray cluster (`[engine] kind = "ray"`): a world's window read, and its states kept and
mapped over, by tasks; the driver fits on bounded samples and sums per-step scalars.

  1. steps     a task per shard of the episode ids (a hash, `[engine] key_shards` of them, as ingest's): the
               shard's labelled steps of the window, newest first, `max_decisions` at most, without latents
               (`dmn.sleep.experience.labelled_steps`). Every figure of a step comes from its own episode's
               records (System 2's best, what an audit stands for), so a shard needs no other; each task
               reads the window's keys and scalars, not its latents.
  2. newest    the driver: the `max_decisions` newest of them all, numbered (`newest`)
  3. latents   a task per shard of the lake's batches, as many, of about equal size: the states and
               simulations of those steps that its batches hold (`latents`), so each latent is read once. The
               simulations' scalars go to the driver; the states, dealt by ranges of steps, stay on the cluster
  4. ranges    a task per range of steps puts its states together: one object in Ray's object store each
               (`States`), never on the driver
  5. the driver puts a step's candidates in the local engine's order and builds the night's `Experience`
  6. outcomes  a task per shard of the batches: a drawn sample of its imagined consequences, on which the
               driver fits the outcome types; then the types of all of them (`outcome_types_of`), so that
               the consequences, a night's largest latents, never reach the driver but for the sample

The night then runs as on the local engine (`dmn.sleep.night`) with its states on the cluster: the driver
takes the samples it fits on (the situations' k-means, at most 256 states a situation; the PCA, 50,000; the
policy, `policy_sample`), and tasks map over the ranges what is computed for every state (each training
state's situation, System 1's answers on the held-out steps). The table's aggregates and the held-out
figures are sums of per-step scalars (a few bytes a step), on the driver.

The `Experience` is the local engine's, row for row, and the bundle the same to the bit: both engines map
over a night's rows in the same blocks (`dmn.sleep.states.apply`). Every task reads the files the driver
listed when the night began, so a batch committed meanwhile is tomorrow's. Tasks only read: Ray runs one
again whose worker or node died (and one whose result was lost with its node, to make it again), and one
that fails for good fails the world's night in one line, with nothing published.
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
from dmn.sleep import experience, states
from dmn.sleep.states import RowWise, apply, groups, joined
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
        n, block = steps.num_rows, s.block_rows
        span = block * -(-max(n, 1) // (block * self.shards))  # a range: whole blocks, one a shard at most
        ranges = -(-max(n, 1) // span)
        read = [self.task(_latents).options(num_returns=1 + ranges).remote(
            self.root, __version__, views, self.world, self.encoder, self.chosen, span, ranges)
            for views in self.batches]
        found = self._gather(f"{self.world}: reading latents", [r[0] for r in read])
        dim = max((d for d, _ in found), default=0)
        held = [self.task(_range).options(num_returns=2).remote(
            self.root, __version__, r * span, min(n, (r + 1) * span), dim, *[parts[1 + r] for parts in read])
            for r in range(ranges)]
        count = self._gather(f"{self.world}: dealing the states into ranges of steps", [c for c, _ in held])
        states = States(self.ray, self.task, self._gather, self.root, self.world, [x for _, x in held], span,
                        sum(count), dim, block)
        sims = experience.in_order(pa.concat_tables([sims for _, sims in found]))  # a step's may be in several
        return experience.experience(self.world, self.encoder, steps, states, sims, s, self.now)

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


class States(states.States):
    """The night's states kept on the cluster, in ranges of rows (`span` rows each, whole blocks: `apply`),
    a Ray object each, which Ray makes again from the tasks that made it should the node holding it die.
    Samples are taken from them, and functions mapped over them, by tasks: only what those return reaches
    the driver."""

    def __init__(self, ray: Any, task: Any, gather: Any, root: str, world: str, ranges: list[Any], span: int,
                 n: int, dim: int, block: int):
        self.ray, self.task, self.gather, self.root, self.world = ray, task, gather, root, world
        self.ranges, self.span, self.n, self.d, self.block = ranges, span, n, dim, block

    def __len__(self) -> int:
        return self.n

    @property
    def dim(self) -> int:
        return self.d

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.map(copies, rows)[0]

    def _map(self, fn: RowWise, rows: np.ndarray, args: tuple[Any, ...]) -> tuple[np.ndarray, ...]:
        """A task per range holding some of `rows`, each given `args` once through the object store."""
        if not len(rows):
            return fn(np.zeros((0, self.d), np.float32), *args)
        which = rows // self.span
        picks, back = groups(which)
        given = self.ray.put(args)
        parts = self.gather(f"{self.world}: {fn.__name__} of {len(rows):,} states", [
            self.task(_apply).remote(self.root, __version__, self.ranges[r], rows[p] - r * self.span, fn, given,
                                     self.block, r * self.span) for p, r in ((p, int(which[p[0]])) for p in picks)])
        return joined(parts, back)


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


def _latents(root: str, version: str, views: dict[str, str], world: str, encoder: str, chosen: pa.Table,
             span: int, ranges: int) -> tuple[Any, ...]:
    """The latents and simulations of the `chosen` steps that the batches of `views` hold (`latents`), as
    1 + `ranges` results: what the driver reads (the states' size, the simulations), then the states of each
    range of `span` steps (their rows, their states), which `_range` puts together."""
    node_check(root, version)
    with _session(views, chosen) as con:
        state, sims = experience.latents(con, world, encoder)
    rows, x = state["i"].to_numpy(), experience.matrix(state["state"])
    which = rows // span
    return (x.shape[1], sims), *((rows[which == r], x[which == r]) for r in range(ranges))


def _range(root: str, version: str, start: int, stop: int, dim: int, *parts: tuple[np.ndarray, np.ndarray]
           ) -> tuple[int, np.ndarray]:
    """The states of steps `start` to `stop`, from the parts the `_latents` tasks read: how many were found
    (all of them, unless the lake changed during the night), and the (stop - start, d) matrix."""
    node_check(root, version)
    x = np.zeros((stop - start, dim), np.float32)
    rows = [(i, part) for i, part in parts if len(i)]
    for i, part in rows:
        x[i - start] = part
    return len(np.unique(np.concatenate([i for i, _ in rows]))) if rows else 0, x


def _apply(root: str, version: str, x: np.ndarray, rows: np.ndarray, fn: RowWise, args: tuple[Any, ...],
           block: int, first: int) -> tuple[np.ndarray, ...]:
    """A row-wise function over rows of one range of states (`apply`; `first`: the night's row of its row 0)."""
    node_check(root, version)
    return apply(x, rows, fn, args, block, first)


def copies(x: np.ndarray) -> tuple[np.ndarray]:
    """The states themselves (`States.take`)."""
    return (x,)


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

