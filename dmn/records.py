"""The data contract, written once: the records agents log and the lake tables dmn keeps.

Everything else follows from `RECORDS`: ingest's parse columns and per-record rules
(`dmn.lake.rules`), the lake's tables (`TABLES`), the JSON Schemas in `schemas/` (`json_schemas`,
checked exactly by the suite), and the fields the logger's methods take (checked by the suite too).

    >>> RECORDS["decision"].required                     # doctest: +SKIP
    ('episode_id', 'step', 'state', 'action', 'source')

After a change here, write the schemas again: `python -c "from dmn.records import write_schemas; write_schemas()"`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
"""Version of the native log format; bumped on any incompatible change."""

SOURCES = ("system1", "system2")
"""Who made a decision: deliberation (System 2) or a reflex (System 1)."""

TENSOR_DTYPES = {"float16": "<f2", "float32": "<f4", "float64": "<f8"}
"""Dtypes a tensor object may carry, with their little-endian numpy codes."""

WORLD_NAME_BYTES = 80
"""Longest world name: it names folders of the lake and of the bundles."""

TIMEZONE = r"(Z|z|[+-]\d\d(:?\d\d)?)$"
"""How a timestamp's text must end: with its time zone."""


@dataclass(frozen=True)
class Kind:
    """What a field holds: its lake type, how ingest reads it from JSON, and its JSON Schema."""

    duck: str
    """The DuckDB type of its lake column."""
    reader: str | None
    """The SQL macro (dmn.lake.rules) that reads it from JSON, NULL when it has another type; None: read as a vector."""
    what: str
    """What it must be, for a quarantine hint: '"step" must be <what>'."""
    schema: dict[str, Any]
    """Its JSON Schema."""
    vector_column: bool = False
    """Its values may also be vectors, kept in a second lake column, `<name>_vector` (FLOAT[])."""


VECTOR_SUFFIX = "_vector"

_TIMESTAMP = {"oneOf": [{"type": "string", "pattern": TIMEZONE, "description": "ISO 8601 with a time zone"},
                        {"type": "number", "description": "Unix seconds"}]}
_VECTOR = {"oneOf": [{"type": "array", "items": {"type": "number"}, "minItems": 1, "description": "the vector's values"},
                     {"$ref": "tensor.schema.json"}]}

KINDS = {
    "name": Kind("VARCHAR", "jstr", "a string", {"type": "string", "minLength": 1}),
    "text": Kind("VARCHAR", "jstr", "a string", {"type": "string"}),
    "source": Kind("VARCHAR", "jstr", "a string", {"enum": list(SOURCES)}),
    "index": Kind("BIGINT", "jint", "an integer", {"type": "integer", "minimum": 0}),
    "number": Kind("DOUBLE", "jnum", "a number", {"type": "number"}),
    "boolean": Kind("BOOLEAN", "jbool", "true or false", {"type": "boolean"}),
    "timestamp": Kind("TIMESTAMPTZ", "jts", "a timestamp", _TIMESTAMP),
    "action": Kind("VARCHAR", "jaction", "an integer or a string, or a vector",
                   {"oneOf": [{"type": ["integer", "string"]}, *_VECTOR["oneOf"]]}, vector_column=True),
    "vector": Kind("FLOAT[]", None, "an array of numbers or a tensor object", _VECTOR),
    "json": Kind("JSON", None, "any JSON", {}),
}
"""name: a non-empty string; source: system1 or system2; index: a non-negative integer; vector: a latent;
action: a label (discrete worlds: an integer or a string, kept as text in `action`) or a vector (continuous
worlds: an array of numbers or a tensor object, kept in `action_vector`)."""


@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    """A key of KINDS."""
    doc: str = ""
    required: bool = False
    minimum: float | None = None
    """For numbers: the least value allowed (a smaller one is quarantined as out of range)."""
    maximum: float | None = None
    """For numbers: the greatest value allowed."""

    def schema(self) -> dict[str, Any]:
        out = dict(KINDS[self.kind].schema)
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.name == "world":  # it names folders: see dmn.lake.rules' "bad world name"
            out.update(maxLength=WORLD_NAME_BYTES, pattern="^[^\\x00-\\x1f]*$", **{"not": {"enum": [".", ".."]}})
        if self.doc:
            out["description"] = self.doc
        return out


@dataclass(frozen=True)
class Record:
    title: str
    doc: str
    fields: tuple[Field, ...]
    """In the order ingest hashes them into a record's fingerprint: reordering them would make every record
    already in a lake look new."""
    table: str
    """The lake table its records land in."""
    key: tuple[str, ...]
    """The fields that name one record: a repeat with other content is a conflict. () for simulations, which
    a planner may repeat: only their whole content names them."""

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.required)

    @property
    def optional(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if not f.required)


_EPISODE_ID = Field("episode_id", "name", "the episode this record belongs to", required=True)
_STEP = Field("step", "index", "index of the decision this record belongs to, within its episode", required=True)
_TS = Field("ts", "timestamp")

RECORDS = {
    "episode": Record("Episode start", "Starts an episode: names the world and the encoder whose latent space its "
                      "vectors live in.", (
        _EPISODE_ID,
        Field("world", "name", "the environment or task; it names folders, so 1-80 bytes of printable text, "
              "not . or ..", required=True),
        Field("encoder", "name", "version of the JEPA encoder; latents of different encoders are never mixed",
              required=True),
        Field("agent", "text", "which agent ran the episode"),
        Field("started_at", "timestamp"),
        Field("meta", "json", "anything else, kept as JSON"),
    ), "episode_starts", ("episode_id",)),
    "simulation": Record("Simulation", "One System 2 evaluation: in latent state `state`, the world model imagined "
                         "`action`, predicted `predicted` and scored it `score`.", (
        _EPISODE_ID, _STEP,
        Field("action", "action", "the action imagined: a label (integers and strings are both kept as text), "
              "or a vector in a continuous world", required=True),
        Field("score", "number", "higher is better", required=True),
        Field("state", "vector", "the latent it was imagined from; left out, it is its step's decision's (so that "
              "a search over hundreds of candidates logs the latent once)"),
        Field("predicted", "vector"),
        Field("vetoed", "boolean", "true when the System 2 router rejected the action"),
        Field("cost_ms", "number", "what the simulation cost", minimum=0),
        _TS,
    ), "simulations", ()),
    "decision": Record("Decision", "What the agent actually did at `step`, and who chose it.", (
        _EPISODE_ID, _STEP,
        Field("action", "action", "the action taken: a label (integers and strings are both kept as text), "
              "or a vector in a continuous world", required=True),
        Field("source", "source", "system2: deliberation; system1: a reflex", required=True),
        Field("state", "vector", required=True),
        Field("confidence", "number", minimum=0, maximum=1),
        Field("latency_ms", "number", minimum=0),
        Field("reflex", "action", "on a System 2 decision that audited System 1: the action System 1 would have "
              "taken (withheld for the audit)"),
        _TS,
    ), "decisions", ("episode_id", "step")),
    "outcome": Record("Outcome", "What the world answered to the action taken at `step`.", (
        _EPISODE_ID, _STEP, Field("reward", "number"), Field("done", "boolean"), Field("success", "boolean"),
    ), "outcomes", ("episode_id", "step")),
    "episode_end": Record("Episode end", "Closes an episode.", (
        _EPISODE_ID, Field("return", "number"), Field("success", "boolean"), Field("ended_at", "timestamp"),
    ), "episode_ends", ("episode_id",)),
}

RECORD_TYPES = tuple(RECORDS)
FIELDS: dict[str, Field] = {f.name: f for r in RECORDS.values() for f in r.fields}
"""Every field by name: a name means the same thing in every record type that has it."""
LATENTS = [name for name, f in FIELDS.items() if f.kind == "vector"]
"""The fields that hold latents (vectors of the world's latent dimension)."""
assert all((f.kind, f.minimum, f.maximum) == (FIELDS[f.name].kind, FIELDS[f.name].minimum, FIELDS[f.name].maximum)
           for r in RECORDS.values() for f in r.fields), "a field name with two meanings"


def owners(name: str) -> tuple[str, ...]:
    """The record types that have field `name`."""
    return tuple(t for t, r in RECORDS.items() if any(f.name == name for f in r.fields))


# -- the lake ----------------------------------------------------------------------------------------

PROVENANCE = {
    "date": "DATE",
    "source_file": "VARCHAR",
    "source_line": "BIGINT",
    "batch": "VARCHAR",
    "ingested_at": "TIMESTAMPTZ",
}
"""Columns every lake table carries besides its record's fields; `world` and `date` are the partition keys."""


def lake_fields(rtype: str) -> dict[str, str]:
    """A record's fields as lake columns and their DuckDB types: an action's vector form beside it."""
    cols = {}
    for f in RECORDS[rtype].fields:
        cols[f.name] = KINDS[f.kind].duck
        if KINDS[f.kind].vector_column:
            cols[f.name + VECTOR_SUFFIX] = "FLOAT[]"
    return cols


VECTOR_COLUMNS = list(dict.fromkeys(name for rtype in RECORDS for name, duck in lake_fields(rtype).items()
                                    if duck == "FLOAT[]"))
"""Every lake column that holds vectors: latents and actions."""


def _table_columns(rtype: str) -> dict[str, str]:
    """A record's lake columns: its fields, the world and encoder of its episode, and its fingerprint (DuckDB's
    hash of its content, by which ingest drops exact repeats)."""
    cols = lake_fields(rtype)
    if rtype == "episode":
        return {"episode_id": cols.pop("episode_id"), "world": cols.pop("world"), "encoder": cols.pop("encoder"), **cols}
    return {"episode_id": cols.pop("episode_id"), "world": "VARCHAR", "encoder": "VARCHAR", **cols,
            "fingerprint": "UBIGINT"}


TABLES = {rtype: (r.table, _table_columns(rtype)) for rtype, r in RECORDS.items()}
"""Record type -> (lake table, its columns and DuckDB types, provenance aside)."""
QUARANTINE = {
    "source_file": "VARCHAR", "source_line": "BIGINT", "type": "VARCHAR", "episode_id": "VARCHAR",
    "reason": "VARCHAR", "hint": "VARCHAR", "raw": "VARCHAR", "raw_bytes": "BIGINT",
    "batch": "VARCHAR", "ingested_at": "TIMESTAMPTZ", "date": "DATE",
}
LAKE_TABLES = [table for table, _ in TABLES.values()] + ["quarantine"]


def columns(table: str) -> dict[str, str]:
    """Column name -> DuckDB type for a lake table."""
    if table == "quarantine":
        return dict(QUARANTINE)
    for name, cols in TABLES.values():
        if name == table:
            return {**cols, **PROVENANCE}
    raise KeyError(table)


# -- the JSON Schemas ----------------------------------------------------------------------------------

SCHEMA_BASE = f"https://dmn.dev/schemas/v{SCHEMA_VERSION}/"


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema (draft 2020-12) of every record, of the tensor object and of any record."""
    head = lambda name, title, doc: {  # noqa: E731
        "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_BASE + name, "title": title,
        "description": doc, "x-dmn-schema-version": SCHEMA_VERSION}
    out = {}
    for rtype, r in RECORDS.items():
        out[f"{rtype}.schema.json"] = {
            **head(f"{rtype}.schema.json", r.title, r.doc), "type": "object",
            "properties": {"type": {"const": rtype}, **{f.name: f.schema() for f in r.fields}},
            "required": ["type", *r.required], "additionalProperties": True}
    out["tensor.schema.json"] = {
        **head("tensor.schema.json", "Tensor", "A vector as base64 of its little-endian bytes. An object with "
               "__type__ but no b64 is a lost latent and is quarantined."),
        "type": "object",
        "properties": {"__type__": {"enum": ["Tensor", "Array"]},
                       "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                       "dtype": {"enum": list(TENSOR_DTYPES), "default": "float32"},
                       "b64": {"type": "string", "contentEncoding": "base64", "minLength": 1}},
        "required": ["__type__", "b64"]}
    out["record.schema.json"] = {
        **head("record.schema.json", "dmn log record", "One line of a dmn JSONL log: any of the record types."),
        "oneOf": [{"$ref": f"{rtype}.schema.json"} for rtype in RECORDS]}
    return out


def schema_text(schema: dict[str, Any]) -> str:
    """A schema as its file holds it."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_schemas(folder: str | Path = "schemas") -> None:
    """Write the JSON Schemas into `folder` (the repository's `schemas/`), after a change to the contract."""
    for name, schema in json_schemas().items():
        (Path(folder) / name).write_text(schema_text(schema), encoding="utf-8")
