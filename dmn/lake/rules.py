"""The record rules, as SQL: what ingest accepts, and the reason and hint for what it does not.

Every rule follows from the contract in `dmn.records`: a field's kind says how it is read and what it must
be, its bounds what range it must lie in. `parse_sql` turns a chunk of raw lines into typed rows of the
`parsed` table in one DuckDB pass: each line is parsed once (`json_transform`), each field is read with a
type check (the macros), and the first rule in `_rules()` that a record breaks gives its reason.
The rules across records are in `dmn.lake.resolve`. Rules here
are (condition, reason, hint) triples in the order they are checked; conditions put their cheap tests
first, since DuckDB evaluates AND left to right on the rows still in play.
"""

from __future__ import annotations

import json

from dmn.lake.duck import quote
from dmn.records import (
    FIELDS,
    KINDS,
    LATENTS,
    RECORD_TYPES,
    RECORDS,
    SOURCES,
    TENSOR_DTYPES,
    TIMEZONE,
    VECTOR_SUFFIX,
    WORLD_NAME_BYTES,
    owners,
)

RAW_KEEP_BYTES = 1 << 20
"""Quarantine keeps at most this much of a bad line's text (the full line stays in the source file)."""


MACROS = rf"""
CREATE MACRO given(x) AS x IS NOT NULL AND json_type(x) <> 'NULL';
CREATE MACRO jstr(x) AS CASE WHEN json_type(x) = 'VARCHAR' THEN x ->> '$' END;
CREATE MACRO jint(x) AS CASE WHEN json_type(x) IN ('BIGINT', 'UBIGINT') THEN try_cast(x AS BIGINT) END;
CREATE MACRO jnum(x) AS CASE WHEN json_type(x) IN ('BIGINT', 'UBIGINT', 'DOUBLE') THEN try_cast(x AS DOUBLE) END;
CREATE MACRO jbool(x) AS CASE WHEN json_type(x) = 'BOOLEAN' THEN x::BOOLEAN END;
CREATE MACRO jaction(x) AS CASE WHEN json_type(x) = 'VARCHAR' THEN x ->> '$'
                                WHEN json_type(x) IN ('BIGINT', 'UBIGINT') THEN x::VARCHAR END;
CREATE MACRO has_tz(s) AS regexp_matches(s, '{TIMEZONE}');
CREATE MACRO jts(x) AS CASE
    WHEN json_type(x) IN ('BIGINT', 'UBIGINT', 'DOUBLE') THEN try(to_timestamp(x::DOUBLE))
    WHEN json_type(x) = 'VARCHAR' AND has_tz(x ->> '$') THEN try_cast(x ->> '$' AS TIMESTAMPTZ) END;
"""

_TENSOR = '{"__type__": "VARCHAR", "shape": "JSON", "dtype": "VARCHAR", "b64": "VARCHAR"}'
_SCALARS = {name: f for name, f in FIELDS.items() if KINDS[f.kind].reader}
"""The fields read with a macro of their kind; vectors are read apart (arrays or tensor objects), meta as it is."""
_STRUCT = json.dumps({"type": "JSON", **{name: "FLOAT[]" if name in LATENTS else "JSON" for name in FIELDS}})
_SLOTS = {**{name: name for name in LATENTS},
          **{name + VECTOR_SUFFIX: name for name, f in FIELDS.items() if KINDS[f.kind].vector_column}}
"""Every column of vectors, and the field it is read from: a latent from its own field, an action's vector
form from the action field, when that holds an array or a tensor object."""
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
    for rtype, record in RECORDS.items():
        for name in record.required:
            present = f"{name}_arr IS NOT NULL OR given({name}_json)" if name in LATENTS else f"given(r.{quote(name)})"
            # (an action given as a vector is given: its vector form is checked below)
            rules.append((f"rtype = '{rtype}' AND NOT ({present})", "'missing field'", f"'{rtype} has no \"{name}\"'"))
    for name, f in _SCALARS.items():
        what = KINDS[f.kind].what
        hint = f"'\"{name}\" must be {what}, got ' || left(r.{quote(name)}::VARCHAR, 80)"
        if f.kind == "timestamp":
            hint += f" || '; {_TS_HINT}'"
        vector = f" AND json_type(r.{quote(name)}) NOT IN ('ARRAY', 'OBJECT')" if KINDS[f.kind].vector_column else ""
        rules.append((f"{_in('rtype', owners(name))} AND given(r.{quote(name)}) AND {quote(name)} IS NULL{vector}",
                      "'wrong field type'", hint))
    for column, source in _SLOTS.items():
        rules += _vector_rules(column, source, owners(source))
    for name, f in FIELDS.items():  # what a value of the right type must also be
        column, scope = quote(name), _in("rtype", owners(name))
        if name == "world":
            rules.append((f"{scope} AND (world = '' OR world IN ('.', '..') OR regexp_matches(world, '[\\x00-\\x1f]') "
                          f"OR strlen(world) > {WORLD_NAME_BYTES})", "'bad world name'",
                          f"'\"world\" must be 1-{WORLD_NAME_BYTES} bytes of printable text and not . or ..'"))
        elif f.kind == "name":
            rules.append((f"{scope} AND {column} = ''", "'wrong field type'", f"'\"{name}\" must not be empty'"))
        elif f.kind == "index":
            rules.append((f"{column} < 0", "'wrong field type'", f"'\"{name}\" must not be negative'"))
        elif f.kind == "source":
            rules.append((f"{scope} AND NOT {_in(column, SOURCES)}", "'wrong field type'",
                          f"'\"{name}\" is ' || {column} || '; expected {' or '.join(SOURCES)}'"))
    numbers = [quote(name) for name, f in FIELDS.items() if f.kind == "number"]
    rules.append((f"NOT isfinite({' + '.join(f'coalesce({n}, 0)' for n in numbers)})", "'NaN or Inf'",
                  "'a number in the record is NaN or Inf'"))
    for name, f in FIELDS.items():
        if f.minimum is not None and f.maximum is not None:
            rules.append((f"{quote(name)} NOT BETWEEN {f.minimum} AND {f.maximum}", "'out of range'",
                          f"'\"{name}\" must be between {f.minimum:g} and {f.maximum:g}'"))
        elif f.minimum is not None:
            rules.append((f"{quote(name)} < {f.minimum}", "'out of range'",
                          f"'\"{name}\" must be at least {f.minimum:g}'" if f.minimum else f"'\"{name}\" must not be negative'"))
    stamps = ", ".join(quote(name) for name, f in FIELDS.items() if f.kind == "timestamp")
    rules.append((f"greatest({stamps}) > now() + to_seconds({float(future_skew)})", "'timestamp in the future'",
                  "'a timestamp is later than now; check the clock of the machine that wrote it'"))
    return rules


def _vector_rules(vec: str, field: str, types: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """The rules of the vectors in column `vec`, read from the record's `field` (named so in the hints)."""
    is_type = _in("rtype", types)
    dtype_ok = _in(f"coalesce({vec}_obj.dtype, 'float32')", tuple(TENSOR_DTYPES))
    obj = f"{vec}_obj"
    return [(f"{is_type} AND {cond}", reason, hint.replace(f'"{vec}"', f'"{field}"')) for cond, reason, hint in [
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
    *[f"{quote(name)} {KINDS[f.kind].duck}" for name, f in FIELDS.items()],
    *[f"{quote(column)} FLOAT[]" for column in _SLOTS if column not in FIELDS],
    "date DATE", "fingerprint UBIGINT", "reason VARCHAR", "hint VARCHAR", "raw VARCHAR", "raw_bytes BIGINT",
    "part INTEGER",
])
"""The `parsed` table: one row per line read, with every field of every record type, its verdict, and (at
commit) the number of the file it goes to."""


def parse_sql(future_skew: float) -> str:
    rules = _rules(future_skew)
    reason = "CASE " + " ".join(f"WHEN {c} THEN {r}" for c, r, _ in rules) + " END"
    hint = "CASE " + " ".join(f"WHEN {c} THEN {h}" for c, _, h in rules) + " END"
    # A field is read only for the record types that own it: any other field is ignored, as the schemas allow.
    scalars = ", ".join(f"CASE WHEN {_in('rtype', owners(name))} THEN {KINDS[f.kind].reader}(r.{quote(name)}) END AS {quote(name)}"
                        for name, f in _SCALARS.items())
    vectors = [_vector_source(column, source) for column, source in _SLOTS.items()]
    decode = [f"CASE WHEN json_type({v}_json) = 'OBJECT' THEN json_transform({v}_json, '{_TENSOR}') END AS {v}_obj"
              for v in _SLOTS]
    blobs = [f"try(from_base64({v}_obj.b64)) AS {v}_blob" for v in _SLOTS]
    finals = [f"coalesce({v}_arr, CASE WHEN {v}_blob IS NOT NULL THEN dmn_tensor({v}_blob, {v}_obj.dtype) END) AS {v}"
              for v in _SLOTS]
    columns = [c.split()[0] for c in PARSED_COLUMNS.split(", ")]
    out = {c: c for c in columns}
    out.update({
        "file_index": "file_index", "source_line": "line", "seq": "seq", "date": "NULL",
        "fingerprint": "NULL", "part": "NULL",
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
              SELECT file_index, seq, line, raw, text, r, rtype, CASE WHEN {_in('rtype', owners('meta'))} THEN r.meta END AS meta, {scalars}, {', '.join(vectors)} FROM (
                SELECT *, CASE WHEN json_type(r.type) = 'VARCHAR' THEN r.type ->> '$' END AS rtype FROM (
                  SELECT file_index, seq, line, raw, text, CASE WHEN text IS NOT NULL THEN try(json_transform(text, '{_STRUCT}')) END AS r
                  FROM (SELECT file_index, seq, line, raw, coalesce(text, try(decode(raw))) AS text FROM chunk)
                  WHERE text IS NULL OR NOT contains(' \t\r\n', left(text, 1)) OR trim(text) <> ''))))))))"""


def _vector_source(column: str, field: str) -> str:
    """`<column>_arr`, the vector when the record gave an array of numbers, and `<column>_json`, what it gave
    when that is not so (a tensor object, or something to quarantine)."""
    scope = _in("rtype", owners(field))
    if column == field:  # a latent: json_transform read it as FLOAT[] already
        return f"""
            CASE WHEN {scope} THEN r.{field} END AS {column}_arr,
            CASE WHEN r.{field} IS NULL AND {scope} THEN json_extract(text, '$.{field}') END AS {column}_json"""
    return f"""
            CASE WHEN {scope} AND json_type(r.{field}) = 'ARRAY' THEN try_cast(r.{field} AS FLOAT[]) END AS {column}_arr,
            CASE WHEN {scope} AND json_type(r.{field}) IN ('ARRAY', 'OBJECT') THEN r.{field} END AS {column}_json"""


def canonical_json() -> str:
    """A bad record rebuilt from its parsed fields, for rules that ran after the raw text was dropped."""
    def value(name: str) -> str:  # an action as it was given: its label, or its vector
        if KINDS[FIELDS[name].kind].vector_column:
            return f"coalesce(to_json(p.{quote(name)}), to_json(p.{quote(name + VECTOR_SUFFIX)}))"
        return f"p.{quote(name)}"

    return ("to_json(struct_pack(type := p.rtype, " + ", ".join(f"{quote(f)} := {value(f)}" for f in sorted(FIELDS))
            + "))::VARCHAR")
