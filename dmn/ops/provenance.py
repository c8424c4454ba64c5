"""Where System 1's reflexes came from: the bundles' situations tied back to the lake's decisions.

Three tables, each a view of `dmn sql` (`dmn.ops.sql`), made only when a query names it:

    situations       a row per situation of every kept bundle: its action, confidence, support, demotion
    lessons          a row per decision of a world's current bundle's encoder, from the start of that bundle's
                     data window on, with the bundle's situation it falls in (its nearest centroid)
    bundle_changes   a row per situation of each kept bundle and of the one kept before it
                     (`dmn.bundle.diff`): what each night changed

    >>> lessons(Home.resolve()).num_rows  # doctest: +SKIP

A lesson `taught` the bundle when System 2 decided it inside the bundle's data window: System 2's action
there is what the situation learnt from. It `audited` the bundle when it came after the bundle was published
and System 1's withheld answer (`reflex`) was logged beside System 2's decision.
"""

from __future__ import annotations

from datetime import datetime, timezone

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dmn.bundle import publish
from dmn.bundle.decide import nearest
from dmn.bundle.diff import SCHEMA as DIFF_SCHEMA
from dmn.bundle.diff import action_text, diff
from dmn.bundle.load import Bundle, load
from dmn.errors import DmnError
from dmn.home import Home
from dmn.lake.store import Store

_KEYS = [("world", pa.string()), ("version", pa.string())]
SITUATIONS = pa.schema([
    *_KEYS, ("current", pa.bool_()), ("situation", pa.int32()), ("action", pa.string()), ("confidence", pa.float64()),
    ("agreement", pa.float64()), ("support", pa.float64()), ("count", pa.int64()), ("demoted", pa.bool_()),
    ("radius", pa.float64()), ("last_seen", pa.timestamp("us", tz="UTC")), ("audits", pa.int64()),
    ("live_agreement", pa.float64())])
LESSONS = pa.schema([
    *_KEYS, ("situation", pa.int32()), ("distance", pa.float64()), ("episode_id", pa.string()), ("step", pa.int64()),
    ("ts", pa.timestamp("us", tz="UTC")), ("source", pa.string()), ("action", pa.string()), ("reflex", pa.string()),
    ("taught", pa.bool_()), ("audited", pa.bool_())])
BUNDLE_CHANGES = pa.schema([*_KEYS, ("previous_version", pa.string()), *DIFF_SCHEMA])


def situations(home: Home) -> pa.Table:
    """Every kept bundle's situations (`SITUATIONS`; `action`: a label, or a vector as JSON)."""
    parts = []
    for m in publish.manifests(home):
        try:
            table = pq.read_table(f"{m['path']}/table.parquet")
        except OSError:
            continue  # a damaged bundle: `dmn check` says so
        columns = {**_keys(m["world"], m["version"], table.num_rows),
                   "current": pa.array([m["current"]] * table.num_rows, pa.bool_()), "situation": table["cluster"],
                   "action": pa.array([action_text(a) for a in table["best_action"].to_pylist()], pa.string())}
        parts.append(pa.table({**columns, **{f.name: table[f.name] if f.name in table.column_names  # else older
                                             else pa.nulls(table.num_rows, f.type) for f in SITUATIONS if f.name not in columns}}))
    return _concat(parts, SITUATIONS)


def lessons(home: Home) -> pa.Table:
    """Per world with a current bundle, the decisions of its encoder since its data window began, each with the
    bundle's situation it falls in and its distance from that situation's centroid (`LESSONS`)."""
    con, parts = None, []
    for world in publish.worlds(home):
        try:
            bundle = load(home, world)
        except DmnError:
            continue
        con = con or Store(home).connect({"decisions"})
        parts.append(_lessons(con, world, bundle))
    return _concat(parts, LESSONS)


def _lessons(con: duckdb.DuckDBPyConnection, world: str, bundle: Bundle) -> pa.Table:
    m = bundle.manifest
    found = con.sql("""
        SELECT episode_id, step, coalesce(ts, ingested_at) AS ts, source,
               coalesce(action, action_vector::VARCHAR) AS action, coalesce(reflex, reflex_vector::VARCHAR) AS reflex,
               state, (reflex IS NOT NULL OR reflex_vector IS NOT NULL) AS withheld
        FROM decisions
        WHERE world = $world AND encoder = $encoder AND coalesce(ts, ingested_at) >= $since::TIMESTAMPTZ
        ORDER BY ts, episode_id, step""", params={"world": world, "encoder": m["encoder"], "since": m["window"]["from"]}
                                             ).to_arrow_table()
    n = found.num_rows
    states = found["state"].combine_chunks().flatten().to_numpy().astype(np.float32).reshape(n, m["dim"])
    situation, distance = nearest(bundle.index, states) if n else (np.zeros(0, np.int64), np.zeros(0))
    ts = found["ts"].to_numpy(zero_copy_only=False).astype("datetime64[us]")
    system2 = found["source"].to_numpy(zero_copy_only=False) == "system2"
    withheld = found["withheld"].to_numpy(zero_copy_only=False).astype(bool)
    return pa.table({
        **_keys(world, bundle.version, n), "situation": pa.array(situation, pa.int32()), "distance": distance,
        **{c: found[c] for c in ("episode_id", "step", "ts", "source", "action", "reflex")},
        "taught": pa.array(system2 & (ts <= _utc(m["window"]["to"]))),
        "audited": pa.array(system2 & withheld & (ts > _utc(m["created_at"]))),
    })


def bundle_changes(home: Home) -> pa.Table:
    """Per world, each kept bundle against the one kept before it (`BUNDLE_CHANGES`; `dmn.bundle.diff`)."""
    parts = []
    for world in publish.worlds(home):
        loaded = []
        for version in publish.versions(home, world):
            try:
                loaded.append(load(home, world, version))
            except DmnError:
                continue  # a damaged bundle: `dmn check` says so
        for old, new in zip(loaded, loaded[1:]):
            rows = diff(old, new).situations
            parts.append(pa.table({**_keys(world, new.version, rows.num_rows),
                                   "previous_version": pa.array([old.version] * rows.num_rows, pa.string()),
                                   **{c: rows[c] for c in rows.column_names}}))
    return _concat(parts, BUNDLE_CHANGES)


def _keys(world: str, version: str, n: int) -> dict[str, pa.Array]:
    return {"world": pa.array([world] * n, pa.string()), "version": pa.array([version] * n, pa.string())}


def _concat(parts: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables([p.select(schema.names).cast(schema) for p in parts]) if parts else schema.empty_table()


def _utc(iso: str) -> np.datetime64:
    """A manifest's ISO time as a naive UTC datetime64, to compare with a timestamp column's values."""
    return np.datetime64(datetime.fromisoformat(iso).astimezone(timezone.utc).replace(tzinfo=None), "us")
