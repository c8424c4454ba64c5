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
"""

from __future__ import annotations

from typing import Any

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

def resolve(con: duckdb.DuckDBPyConnection, store: Store, manifests: list[dict[str, Any]], settings: Settings
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Apply the rules across records to `parsed`; returns the (world, encoder) latent dimensions and the
    action kinds this batch fixes."""
    run(con, "CREATE TABLE lake_episodes AS SELECT episode_id, world, encoder, started_at "
             f"FROM ({store.table_sql('episode_starts', manifests)})")
    for sql in EPISODES:
        run(con, sql)
    new_dims = _dimensions(con, store.known("dims", manifests), settings.dims)
    new_kinds = _action_kinds(con, store.known("action_kinds", manifests), settings.actions)
    for rtype, record in RECORDS.items():
        if rtype == "episode":
            continue  # repeats of episodes were resolved with them
        run(con, f"UPDATE parsed SET fingerprint = {_fingerprint(rtype)} WHERE reason IS NULL AND rtype = '{rtype}'")
        lake = store.table_sql(TABLES[rtype][0], manifests)
        if record.key:
            _repeats(con, rtype, ", ".join(record.key), lake)
        else:
            _resent(con, lake)
    return new_dims, new_kinds


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


def _settle(con: duckdb.DuckDBPyConnection, rows: list[tuple], known: dict[tuple[str, str], int],
            fixed: dict[str, int], view: str) -> list[dict[str, Any]]:
    """What each (world, encoder) of the batch lives by, from `rows` (world, encoder, value, count; most common
    first): dmn.toml's for the world, else what earlier batches fixed, else the batch's most common. It is
    registered as the view `view` (world, encoder, dim) for the quarantine that follows (which unregisters
    it); returns the rows the ledger does not hold yet (empty, and nothing registered, without rows)."""
    settled: dict[tuple[str, str], int] = {}
    new = []
    for world, encoder, value, _ in rows:
        if (world, encoder) in settled:
            continue
        settled[(world, encoder)] = fixed.get(world, known.get((world, encoder), value))
        if (world, encoder) not in known:
            new.append({"world": world, "encoder": encoder, "dim": settled[(world, encoder)]})
    if settled:
        con.register(view, pa.Table.from_pylist([{"world": w, "encoder": e, "dim": d} for (w, e), d in settled.items()]))
    return new


def _dimensions(con: duckdb.DuckDBPyConnection, known: dict[tuple[str, str], int],
                fixed: dict[str, int]) -> list[dict[str, Any]]:
    """Fix each (world, encoder)'s latent dimension and quarantine vectors of another length."""
    rows = run(con, """
        SELECT world, encoder, len(state) AS dim, count(*) AS n FROM parsed
        WHERE reason IS NULL AND state IS NOT NULL GROUP BY ALL ORDER BY n DESC, dim""")
    new = _settle(con, rows, known, fixed, "dims_arrow")
    if not rows:
        return new
    for vec in LATENTS:
        run(con, f"""UPDATE parsed SET reason = 'wrong vector length',
            hint = '"{vec}" has ' || len(parsed.{vec}) || ' values, but world "' || parsed.world || '" (encoder "'
                   || parsed.encoder || '") has dimension ' || d.dim
            FROM dims_arrow d WHERE parsed.reason IS NULL AND parsed.world = d.world AND parsed.encoder = d.encoder
              AND parsed.{vec} IS NOT NULL AND len(parsed.{vec}) <> d.dim""")
    con.unregister("dims_arrow")
    return new


def _action_kinds(con: duckdb.DuckDBPyConnection, known: dict[tuple[str, str], int],
                  fixed: dict[str, int]) -> list[dict[str, Any]]:
    """Fix each (world, encoder)'s action kind (0: labels; d: vectors of d values) and quarantine the
    simulations and decisions whose action, or withheld reflex, is of another kind or length."""
    rows = run(con, """
        SELECT world, encoder, coalesce(len(action_vector), 0) AS dim, count(*) AS n FROM parsed
        WHERE reason IS NULL AND rtype IN ('simulation', 'decision') GROUP BY ALL ORDER BY n DESC, dim""")
    new = _settle(con, rows, known, fixed, "kinds_arrow")
    if not rows:
        return new
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
    return new


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
