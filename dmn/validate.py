"""The record rules, as SQL: what ingest accepts, and the reason and hint for what it does not.

`parse_sql` turns a chunk of raw lines into typed rows of the `parsed` table in one DuckDB pass:
each line is parsed once (`json_transform`), each field is read with a type check (the macros),
and the first rule in `rules()` that a record breaks gives its reason. `RESOLVE` and `KEYED` are the
rules across records, run once per batch. Rules are (condition, reason, hint) triples in the
order they are checked; conditions put their cheap tests first, since DuckDB evaluates AND left
to right on the rows still in play.
"""

from __future__ import annotations

import json

from dmn.records import OPTIONAL, RECORD_TYPES, REQUIRED, SOURCES, TENSOR_DTYPES
from dmn.store import quote

RAW_KEEP_BYTES = 1 << 20
"""Quarantine keeps at most this much of a bad line's text (the full line stays in the source file)."""


MACROS = r"""
CREATE MACRO given(x) AS x IS NOT NULL AND json_type(x) <> 'NULL';
CREATE MACRO jstr(x) AS CASE WHEN json_type(x) = 'VARCHAR' THEN x ->> '$' END;
CREATE MACRO jint(x) AS CASE WHEN json_type(x) IN ('BIGINT', 'UBIGINT') THEN try_cast(x AS BIGINT) END;
CREATE MACRO jnum(x) AS CASE WHEN json_type(x) IN ('BIGINT', 'UBIGINT', 'DOUBLE') THEN try_cast(x AS DOUBLE) END;
CREATE MACRO jbool(x) AS CASE WHEN json_type(x) = 'BOOLEAN' THEN x::BOOLEAN END;
CREATE MACRO jaction(x) AS CASE WHEN json_type(x) = 'VARCHAR' THEN x ->> '$'
                                WHEN json_type(x) IN ('BIGINT', 'UBIGINT') THEN x::VARCHAR END;
CREATE MACRO has_tz(s) AS regexp_matches(s, '(Z|z|[+-]\d\d(:?\d\d)?)$');
CREATE MACRO jts(x) AS CASE
    WHEN json_type(x) IN ('BIGINT', 'UBIGINT', 'DOUBLE') THEN try(to_timestamp(x::DOUBLE))
    WHEN json_type(x) = 'VARCHAR' AND has_tz(x ->> '$') THEN try_cast(x ->> '$' AS TIMESTAMPTZ) END;
"""

_TENSOR = '{"__type__": "VARCHAR", "shape": "JSON", "dtype": "VARCHAR", "b64": "VARCHAR"}'
_STRUCT = json.dumps({
    **{f: "JSON" for t in RECORD_TYPES for f in ("type",) + REQUIRED[t] + OPTIONAL[t]},
    "state": "FLOAT[]", "predicted": "FLOAT[]",
})

# Each scalar field: (how to read it from JSON, what it must be, for the reason text).
_SCALARS = {
    "episode_id": ("jstr", "a string"), "world": ("jstr", "a string"), "encoder": ("jstr", "a string"),
    "agent": ("jstr", "a string"), "source": ("jstr", "a string"), "step": ("jint", "an integer"),
    "action": ("jaction", "an integer or a string"), "reflex": ("jaction", "an integer or a string"),
    "score": ("jnum", "a number"), "cost_ms": ("jnum", "a number"),
    "confidence": ("jnum", "a number"), "latency_ms": ("jnum", "a number"), "reward": ("jnum", "a number"),
    "return": ("jnum", "a number"), "vetoed": ("jbool", "true or false"), "done": ("jbool", "true or false"),
    "success": ("jbool", "true or false"), "started_at": ("jts", "a timestamp"), "ended_at": ("jts", "a timestamp"),
    "ts": ("jts", "a timestamp"),
}
_TS_HINT = "use ISO 8601 with a time zone (2026-11-22T03:00:00Z) or Unix seconds"


def _rules(future_skew: float) -> list[tuple[str, str, str]]:
    """The per-record rules, in order: (condition, reason, hint as SQL). The first that holds wins."""
    rules = [
        ("text IS NULL", "'not valid UTF-8'", "'the line has bytes that are not UTF-8 text'"),
        ("r IS NULL", "'not valid JSON'", "'each line must be one complete JSON object'"),
        ("rtype IS NULL AND json_type(text) <> 'OBJECT'", "'not a JSON object'", "'a record is a JSON object, this line holds a ' || lower(json_type(text))"),
        ("NOT given(r.type)", "'missing field'", "'the record has no \"type\"'"),
        (f"rtype IS NULL OR NOT {_in('rtype', RECORD_TYPES)}", "'unknown record type'",
         f"'\"type\" is ' || r.type || '; expected one of {', '.join(RECORD_TYPES)}'"),
    ]
    for rtype in RECORD_TYPES:
        for name in REQUIRED[rtype]:
            present = f"{name}_arr IS NOT NULL OR given({name}_json)" if name in ("state", "predicted") else f"given(r.{quote(name)})"
            rules.append((f"rtype = '{rtype}' AND NOT ({present})", "'missing field'", f"'{rtype} has no \"{name}\"'"))
    for name, (_, what) in _SCALARS.items():
        types = [t for t in RECORD_TYPES if name in REQUIRED[t] + OPTIONAL[t]]
        hint = f"'\"{name}\" must be {what}, got ' || left(r.{quote(name)}::VARCHAR, 80)"
        if what == "a timestamp":
            hint += f" || '; {_TS_HINT}'"
        rules.append((f"{_in('rtype', types)} AND given(r.{quote(name)}) AND {quote(name)} IS NULL", "'wrong field type'", hint))
    for vec, types in (("state", ("simulation", "decision")), ("predicted", ("simulation",))):
        rules += _vector_rules(vec, types)
    rules += [
        ("episode_id = ''", "'wrong field type'", "'\"episode_id\" must not be empty'"),
        ("rtype = 'episode' AND (world = '' OR world IN ('.', '..') OR regexp_matches(world, '[\\x00-\\x1f]') OR strlen(world) > 80)",
         "'bad world name'", "'\"world\" must be 1-80 bytes of printable text and not . or ..'"),
        ("rtype = 'episode' AND encoder = ''", "'wrong field type'", "'\"encoder\" must not be empty'"),
        ("step < 0", "'wrong field type'", "'\"step\" must not be negative'"),
        (f"rtype = 'decision' AND NOT {_in('source', SOURCES)}", "'wrong field type'",
         "'\"source\" is ' || source || '; expected system1 or system2'"),
        ("NOT isfinite(coalesce(score, 0) + coalesce(cost_ms, 0) + coalesce(confidence, 0) + coalesce(latency_ms, 0)"
         " + coalesce(reward, 0) + coalesce(\"return\", 0))", "'NaN or Inf'", "'a number in the record is NaN or Inf'"),
        ("confidence NOT BETWEEN 0 AND 1", "'out of range'", "'\"confidence\" must be between 0 and 1'"),
        ("cost_ms < 0 OR latency_ms < 0", "'out of range'", "'\"cost_ms\" and \"latency_ms\" must not be negative'"),
        (f"greatest(started_at, ended_at, ts) > now() + to_seconds({float(future_skew)})", "'timestamp in the future'",
         "'a timestamp is later than now; check the clock of the machine that wrote it'"),
    ]
    return rules


def _vector_rules(vec: str, types: tuple[str, ...]) -> list[tuple[str, str, str]]:
    is_type = _in("rtype", types)
    dtype_ok = _in(f"coalesce({vec}_obj.dtype, 'float32')", tuple(TENSOR_DTYPES))
    obj = f"{vec}_obj"
    return [(f"{is_type} AND {cond}", reason, hint) for cond, reason, hint in [
        (f"{vec}_arr IS NULL AND given({vec}_json) AND json_type({vec}_json) <> 'OBJECT'", "'wrong field type'",
         f"'\"{vec}\" must be an array of numbers or a tensor object, got ' || lower(json_type({vec}_json))"),
        (f"{vec}_arr IS NULL AND given({vec}_json) AND {obj}.b64 IS NULL", "'latent lost'",
         f"'\"{vec}\" is a tensor object without values (\"b64\"), as Lár-JEPA''s TensorSafeEncoder writes; "
         "log with dmn.EpisodeLogger or dmn.integrations.lar.TensorAuditLogger, which keep the values'"),
        (f"{vec}_arr IS NULL AND given({vec}_json) AND NOT {dtype_ok}",
         "'bad tensor'", f"'\"{vec}\" has dtype ' || {obj}.dtype || '; expected float16, float32 or float64'"),
        (f"{vec}_arr IS NULL AND given({vec}_json) AND {vec}_blob IS NULL", "'bad tensor'",
         f"'\"{vec}\".b64 is not valid base64'"),
        (f"{vec}_arr IS NULL AND given({vec}_json) AND octet_length({vec}_blob) = 0", "'empty vector'", f"'\"{vec}\" has no values'"),
        (f"{vec}_arr IS NULL AND given({vec}_json) AND {vec} IS NULL", "'bad tensor'",
         f"'\"{vec}\" has ' || octet_length({vec}_blob) || ' bytes, not a whole number of ' || coalesce({obj}.dtype, 'float32') || ' values'"),
        (f"{vec}_arr IS NULL AND given({vec}_json) AND json_type({obj}.shape) = 'ARRAY' AND "
         f"coalesce(list_product(try_cast({obj}.shape AS BIGINT[])), -1) <> len({vec})", "'bad tensor'",
         f"'\"{vec}\" shape ' || {obj}.shape || ' does not match its ' || len({vec}) || ' values'"),
        (f"len({vec}) = 0", "'empty vector'", f"'\"{vec}\" has no values'"),
        (f"list_count({vec}) < len({vec})", "'wrong field type'", f"'\"{vec}\" has values that are not numbers (or are beyond float32 range)'"),
        (f"NOT isfinite(list_sum({vec})) AND NOT list_bool_and(list_transform({vec}, lambda x: isfinite(x)))",
         "'NaN or Inf'", f"'\"{vec}\" contains NaN or Inf'"),
    ]]


def _in(expr: str, items: tuple[str, ...]) -> str:
    # list_contains rather than IN: DuckDB plans an IN list of five or more as a join, per use.
    return f"list_contains([{', '.join(repr(i) for i in items)}], {expr})"


PARSED_COLUMNS = ", ".join([
    "file_index INTEGER", "source_line BIGINT", "seq BIGINT", "rtype VARCHAR",
    *[f"{quote(name)} {duck}" for name, duck in {
        "episode_id": "VARCHAR", "world": "VARCHAR", "encoder": "VARCHAR", "agent": "VARCHAR",
        "started_at": "TIMESTAMPTZ", "meta": "JSON", "step": "BIGINT", "state": "FLOAT[]", "action": "VARCHAR",
        "score": "DOUBLE", "predicted": "FLOAT[]", "vetoed": "BOOLEAN", "cost_ms": "DOUBLE", "ts": "TIMESTAMPTZ",
        "source": "VARCHAR", "confidence": "DOUBLE", "latency_ms": "DOUBLE", "reflex": "VARCHAR", "reward": "DOUBLE", "done": "BOOLEAN",
        "success": "BOOLEAN", "return": "DOUBLE", "ended_at": "TIMESTAMPTZ",
    }.items()],
    "date DATE", "fingerprint UBIGINT", "reason VARCHAR", "hint VARCHAR", "raw VARCHAR", "raw_bytes BIGINT",
])


def parse_sql(future_skew: float) -> str:
    rules = _rules(future_skew)
    reason = "CASE " + " ".join(f"WHEN {c} THEN {r}" for c, r, _ in rules) + " END"
    hint = "CASE " + " ".join(f"WHEN {c} THEN {h}" for c, _, h in rules) + " END"
    # A field is read only for the record types that own it: any other field is ignored, as the schemas allow.
    owners = {name: tuple(t for t in RECORD_TYPES if name in REQUIRED[t] + OPTIONAL[t]) for name in _SCALARS}
    scalars = ", ".join(f"CASE WHEN {_in('rtype', owners[name])} THEN {fn}(r.{quote(name)}) END AS {quote(name)}"
                        for name, (fn, _) in _SCALARS.items())
    vectors = []
    for vec, types in (("state", ("simulation", "decision")), ("predicted", ("simulation",))):
        vectors.append(f"""
            CASE WHEN {_in('rtype', types)} THEN r.{vec} END AS {vec}_arr,
            CASE WHEN r.{vec} IS NULL AND {_in('rtype', types)} THEN json_extract(text, '$.{vec}') END AS {vec}_json""")
    decode = []
    for vec in ("state", "predicted"):
        decode.append(f"""
            CASE WHEN json_type({vec}_json) = 'OBJECT' THEN json_transform({vec}_json, '{_TENSOR}') END AS {vec}_obj""")
    blobs = [f"try(from_base64({v}_obj.b64)) AS {v}_blob" for v in ("state", "predicted")]
    finals = [f"coalesce({v}_arr, CASE WHEN {v}_blob IS NOT NULL THEN dmn_tensor({v}_blob, {v}_obj.dtype) END) AS {v}"
              for v in ("state", "predicted")]
    columns = [c.split()[0] for c in PARSED_COLUMNS.split(", ")]
    out = {c: c for c in columns}
    out.update({
        "file_index": "file_index", "source_line": "line", "seq": "seq", "date": "NULL",
        "fingerprint": "NULL",
        "reason": "reason", "hint": "hint",
        "raw": f"CASE WHEN reason IS NOT NULL THEN left(rtrim(coalesce(text, raw::VARCHAR), chr(10) || chr(13)), {RAW_KEEP_BYTES}) END",
        "raw_bytes": "CASE WHEN reason IS NOT NULL THEN octet_length(raw) END",
    })
    select = ", ".join(f"{expr} AS {name}" if expr != name else name for name, expr in out.items())
    return f"""
    INSERT INTO parsed
    SELECT {select} FROM (
      SELECT *, CASE WHEN reason IS NOT NULL THEN {hint} END AS hint FROM (
      SELECT *, {reason} AS reason FROM (
        SELECT *, {', '.join(finals)} FROM (
          SELECT *, {', '.join(blobs)} FROM (
            SELECT *, {', '.join(decode)} FROM (
              SELECT file_index, seq, line, raw, text, r, rtype, CASE WHEN rtype = 'episode' THEN r.meta END AS meta, {scalars}, {', '.join(vectors)} FROM (
                SELECT *, CASE WHEN json_type(r.type) = 'VARCHAR' THEN r.type ->> '$' END AS rtype FROM (
                  SELECT file_index, seq, line, raw, text, CASE WHEN text IS NOT NULL THEN try(json_transform(text, '{_STRUCT}')) END AS r
                  FROM (SELECT file_index, seq, line, raw, try(decode(raw)) AS text FROM chunk)
                  WHERE text IS NULL OR NOT contains(' \t\r\n', left(text, 1)) OR trim(text) <> ''))))))))"""


def resolve_sql() -> list[str]:
    """Rules across records, run once per batch over `parsed` (see _Batch.finish)."""
    return [
        # Episodes: one record per id; a repeat that agrees is a duplicate, one that disagrees a conflict.
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
        # Every other record belongs to a started episode and takes its world and encoder.
        """UPDATE parsed SET world = e.world, encoder = e.encoder,
             date = coalesce(parsed.ts, parsed.ended_at, e.started_at, now())::DATE
           FROM known e WHERE parsed.reason IS NULL AND parsed.rtype <> 'episode' AND parsed.episode_id = e.episode_id""",
        """UPDATE parsed SET reason = 'episode never started',
             hint = 'no episode record with episode_id ' || episode_id || ' has been ingested; log the episode record first'
           WHERE reason IS NULL AND rtype <> 'episode' AND world IS NULL""",
        """UPDATE parsed SET date = coalesce(started_at, now())::DATE WHERE reason IS NULL AND rtype = 'episode'""",
    ]


RESOLVE = resolve_sql()

KEYED = [  # (record type, its key, its content: a repeat of the key with the same content is a mere duplicate;
           #  simulations are keyed by their content alone, see _Batch._drop_resent_simulations)
    ("simulation", "fingerprint", "episode_id, step, action, score, state, predicted, vetoed, cost_ms, ts"),
    ("decision", "episode_id, step", "episode_id, step, action, source, state, confidence, latency_ms, reflex, ts"),
    ("outcome", "episode_id, step", "episode_id, step, reward, done, success"),
    ("episode_end", "episode_id", 'episode_id, "return", success, ended_at'),
]


def canonical_json() -> str:
    """A bad record rebuilt from its parsed fields, for rules that ran after the raw text was dropped."""
    fields = sorted({f for t in RECORD_TYPES for f in REQUIRED[t] + OPTIONAL[t]})
    return "to_json(struct_pack(type := p.rtype, " + ", ".join(f"{quote(f)} := p.{quote(f)}" for f in fields) + "))::VARCHAR"
