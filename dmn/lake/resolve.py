"""Resolve: the rules across records, once per batch over the `parsed` table.

    episodes     one start per id; a repeat that agrees is a duplicate, one that disagrees a conflict;
                 every other record belongs to a started episode (in the lake or this batch) and takes
                 its world, encoder and date
    dimensions   each (world, encoder) has one latent dimension: fixed by `[dims]`, by earlier batches, or
                 by this one's most common; vectors of another length are quarantined
    actions      each (world, encoder) has one kind of action, labels or vectors of one length: fixed by
                 `[actions]`, by earlier batches, or by this one's most common; other actions are quarantined
    repeats      a record repeated with the same content (its fingerprint) is a duplicate and dropped;
                 with the same key (`dmn.records.Record.key`) but other content, a conflict

`resolve` runs them in order. The Ray engine (`dmn.lake.distributed`) runs the same phases over shards of the
episode ids, settling the dimensions and kinds of action once from every shard's `tallies`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import duckdb
import pyarrow as pa

from dmn.config import Settings
from dmn.lake.duck import quote, run
from dmn.lake.store import Store
from dmn.records import FIELDS, KINDS, LATENTS, RECORDS, TABLES, VECTOR_SUFFIX

EPISODES = [
    """CREATE TABLE batch_episodes AS SELECT seq, episode_id, world, encoder, started_at,
              row_number() OVER (PARTITION BY episode_id ORDER BY seq) AS k
       FROM parsed WHERE reason IS NULL AND rtype = 'episode'""",
    """CREATE TABLE known AS
         SELECT episode_id, world, encoder, started_at FROM lake_episodes
         UNION ALL
         SELECT episode_id, world, encoder, started_at FROM batch_episodes
         WHERE k = 1 AND episode_id NOT IN (SELECT episode_id FROM lake_episodes)""",
    """UPDATE parsed SET
         reason = CASE WHEN parsed.world = e.world AND parsed.encoder = e.encoder THEN 'duplicate' ELSE 'conflicting episode' END,
         hint = 'episode ' || parsed.episode_id || ' was already started in world "' || e.world || '" with encoder "'
                || e.encoder || '"'
       FROM known e
       WHERE parsed.reason IS NULL AND parsed.rtype = 'episode' AND parsed.episode_id = e.episode_id
         AND (parsed.seq NOT IN (SELECT seq FROM batch_episodes WHERE k = 1)
              OR parsed.episode_id IN (SELECT episode_id FROM lake_episodes))""",
    """UPDATE parsed SET world = e.world, encoder = e.encoder,
         date = coalesce(parsed.ts, parsed.ended_at, e.started_at, now())::DATE
       FROM known e WHERE parsed.reason IS NULL AND parsed.rtype <> 'episode' AND parsed.episode_id = e.episode_id""",
    """UPDATE parsed SET reason = 'episode never started',
         hint = 'no episode record with episode_id ' || episode_id || ' has been ingested; log the episode record first'
       WHERE reason IS NULL AND rtype <> 'episode' AND world IS NULL""",
    """UPDATE parsed SET date = coalesce(started_at, now())::DATE WHERE reason IS NULL AND rtype = 'episode'""",
]
"""The episode rules, in order."""

FIXES = {"dims": "dims", "action_kinds": "actions"}
"""What a batch fixes per (world, encoder), and the section of the settings that can fix it for a world."""


def resolve(con: duckdb.DuckDBPyConnection, store: Store, manifests: list[dict[str, Any]], settings: Settings
            ) -> dict[str, list[dict[str, Any]]]:
    """Apply the rules across records to `parsed`; returns what this batch fixes: the (world, encoder) latent
    dimensions ("dims") and kinds of action ("action_kinds")."""
    def lake(table: str) -> str:
        return store.table_sql(table, manifests)

    episodes(con, lake)
    settled, fixes = settle(tallies(con), store, manifests, settings)
    enforce(con, settled)
    repeats(con, lake)
    return fixes


def episodes(con: duckdb.DuckDBPyConnection, lake: Callable[[str], str]) -> None:
    """The episode rules (`EPISODES`); `lake(table)` is the SELECT of a lake table's rows to compare with."""
    run(con, f"CREATE TABLE lake_episodes AS SELECT episode_id, world, encoder, started_at FROM ({lake('episode_starts')})")
    for sql in EPISODES:
        run(con, sql)


def tallies(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    """How many of the batch's good records say each (world, encoder, value): of the latent dimension ("dims")
    and of the kind of action ("action_kinds": 0, labels; d, vectors of d values)."""
    return {"dims": run(con, """
                SELECT world, encoder, len(state) AS dim, count(*) AS n FROM parsed
                WHERE reason IS NULL AND state IS NOT NULL GROUP BY ALL"""),
            "action_kinds": run(con, """
                SELECT world, encoder, coalesce(len(action_vector), 0) AS dim, count(*) AS n FROM parsed
                WHERE reason IS NULL AND rtype IN ('simulation', 'decision') GROUP BY ALL""")}


def add_tallies(shards: list[dict[str, list[tuple]]]) -> dict[str, list[tuple]]:
    """The tallies of a batch's shards, as one batch's."""
    out: dict[str, Counter] = {key: Counter() for key in FIXES}
    for shard in shards:
        for key, rows in shard.items():
            for world, encoder, value, n in rows:
                out[key][world, encoder, value] += n
    return {key: [(*k, n) for k, n in counts.items()] for key, counts in out.items()}


def settle(counted: dict[str, list[tuple]], store: Store, manifests: list[dict[str, Any]], settings: Settings
           ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """What each (world, encoder) of the batch lives by: dmn.toml's for the world, else what earlier batches
    fixed, else the batch's most common (the smaller on a tie). Returns the settled rows (world, encoder, dim)
    and those the catalog does not hold yet (what this batch fixes), each by what they fix."""
    settled, fixes = {}, {}
    for key, section in FIXES.items():
        known, fixed = store.known(key, manifests), getattr(settings, section)
        chosen: dict[tuple[str, str], int] = {}
        fixes[key] = []
        for world, encoder, value, _ in sorted(counted[key], key=lambda r: (-r[3], r[2], r[0], r[1])):
            if (world, encoder) in chosen:
                continue
            chosen[world, encoder] = fixed.get(world, known.get((world, encoder), value))
            if (world, encoder) not in known:
                fixes[key].append({"world": world, "encoder": encoder, "dim": chosen[world, encoder]})
        settled[key] = [{"world": w, "encoder": e, "dim": d} for (w, e), d in chosen.items()]
    return settled, fixes


def enforce(con: duckdb.DuckDBPyConnection, settled: dict[str, list[dict[str, Any]]]) -> None:
    """Quarantine the vectors of another length than their world's dimension, and the actions (or withheld
    reflexes) of another kind or length than their world's (`settle`)."""
    if settled["dims"]:
        con.register("dims_arrow", pa.Table.from_pylist(settled["dims"]))
        for vec in LATENTS:
            run(con, f"""UPDATE parsed SET reason = 'wrong vector length',
                hint = '"{vec}" has ' || len(parsed.{vec}) || ' values, but world "' || parsed.world || '" (encoder "'
                       || parsed.encoder || '") has dimension ' || d.dim
                FROM dims_arrow d WHERE parsed.reason IS NULL AND parsed.world = d.world AND parsed.encoder = d.encoder
                  AND parsed.{vec} IS NOT NULL AND len(parsed.{vec}) <> d.dim""")
        con.unregister("dims_arrow")
    if not settled["action_kinds"]:
        return
    con.register("kinds_arrow", pa.Table.from_pylist(settled["action_kinds"]))
    where = "WHERE parsed.reason IS NULL AND parsed.world = k.world AND parsed.encoder = k.encoder"
    for field in ("action", "reflex"):
        label, vector = quote(field), quote(field + VECTOR_SUFFIX)
        run(con, f"""UPDATE parsed SET reason = 'wrong action kind',
            hint = 'world "' || parsed.world || '" (encoder "' || parsed.encoder || '") has '
                   || CASE WHEN k.dim = 0 THEN 'discrete actions (labels), and this {field} is a vector'
                           ELSE k.dim || '-dimensional actions (vectors), and this {field} is a label' END
            FROM kinds_arrow k {where} AND ((k.dim = 0 AND parsed.{vector} IS NOT NULL)
                                            OR (k.dim > 0 AND parsed.{label} IS NOT NULL))""")
        run(con, f"""UPDATE parsed SET reason = 'wrong action length',
            hint = '"{field}" has ' || len(parsed.{vector}) || ' values, but world "' || parsed.world || '" (encoder "'
                   || parsed.encoder || '") has ' || k.dim || '-dimensional actions'
            FROM kinds_arrow k {where} AND k.dim > 0 AND len(parsed.{vector}) <> k.dim""")
    con.unregister("kinds_arrow")


def repeats(con: duckdb.DuckDBPyConnection, lake: Callable[[str], str]) -> None:
    """Repeats of records other than episodes (theirs were resolved with them), within the batch and against
    `lake(table)`: duplicates dropped, conflicts quarantined."""
    for rtype, record in RECORDS.items():
        if rtype == "episode":
            continue
        run(con, f"UPDATE parsed SET fingerprint = {_fingerprint(rtype)} WHERE reason IS NULL AND rtype = '{rtype}'")
        if record.key:
            _repeats(con, rtype, ", ".join(record.key), lake(TABLES[rtype][0]))
        else:
            _resent(con, lake(TABLES[rtype][0]))


def _fingerprint(rtype: str) -> str:
    """DuckDB's hash of a record's content, its fields in contract order. An action's vector form joins the
    hash only where a record has one, so that labels hash as they did before actions could be vectors."""
    fields = [f.name for f in RECORDS[rtype].fields]
    vectors = [name + VECTOR_SUFFIX for name in fields if KINDS[FIELDS[name].kind].vector_column]
    if not vectors:
        return f"hash({', '.join(map(quote, fields))})"
    absent = " AND ".join(f"{quote(v)} IS NULL" for v in vectors)
    return (f"CASE WHEN {absent} THEN hash({', '.join(map(quote, fields))}) "
            f"ELSE hash({', '.join(map(quote, fields + vectors))}) END")


def _repeats(con: duckdb.DuckDBPyConnection, rtype: str, key: str, lake: str) -> None:
    """One record per key: a repeat with the same content (fingerprint) is a duplicate and dropped,
    one with other content a conflict and quarantined, whether the first is in the store or
    earlier in this batch."""
    run(con, f"""
        WITH batch AS (SELECT seq, {key}, fingerprint AS h,
                              row_number() OVER (PARTITION BY {key} ORDER BY seq) AS k
                       FROM parsed WHERE reason IS NULL AND rtype = '{rtype}'),
             stored AS (SELECT {key}, any_value(fingerprint) AS h FROM ({lake}) GROUP BY ALL),
             earlier AS (SELECT {key}, h, 'the store' AS place FROM stored
                         UNION ALL
                         SELECT {key}, h, 'an earlier line of this batch' FROM batch
                         WHERE k = 1 AND ({key}) NOT IN (SELECT ({key}) FROM stored)),
             repeats AS (SELECT b.seq, b.h = e.h AS same, e.place FROM batch b JOIN earlier e USING ({key})
                         WHERE b.k > 1 OR e.place = 'the store')
        UPDATE parsed SET reason = CASE WHEN r.same THEN 'duplicate' ELSE 'conflicting record' END,
                          hint = CASE WHEN r.same THEN 'the same {rtype} as ' || r.place
                                      ELSE '{rtype} with the same {key.replace(", ", " and ")} as in ' || r.place
                                           || ', but other values' END
        FROM repeats r WHERE parsed.seq = r.seq AND parsed.rtype = '{rtype}'""")


def _resent(con: duckdb.DuckDBPyConnection, lake: str) -> None:
    """Identical simulations can be genuine (a planner that evaluates the same action twice), so
    a fingerprint keeps as many copies as the one source that holds the most: copies the store
    already has, and copies in other files of this batch (a re-sent or recompressed log), go."""
    run(con, f"""
        WITH batch AS (SELECT seq, file_index, fingerprint FROM parsed WHERE reason IS NULL AND rtype = 'simulation'),
             stored AS (SELECT fingerprint, count(*) AS c FROM ({lake}) GROUP BY 1),
             counts AS (SELECT fingerprint, file_index, count(*) AS n FROM batch GROUP BY ALL),
             source AS (SELECT fingerprint, first(file_index ORDER BY n DESC, file_index) AS file_index
                        FROM counts GROUP BY 1),
             ranked AS (SELECT seq, fingerprint, file_index,
                               row_number() OVER (PARTITION BY fingerprint, file_index ORDER BY seq) AS k FROM batch),
             resent AS (SELECT r.seq FROM ranked r JOIN source s USING (fingerprint) LEFT JOIN stored USING (fingerprint)
                        WHERE r.file_index <> s.file_index OR r.k <= coalesce(stored.c, 0))
        UPDATE parsed SET reason = 'duplicate',
                          hint = 'the same simulation is in the store or in another file of this batch'
        WHERE seq IN (SELECT seq FROM resent)""")
