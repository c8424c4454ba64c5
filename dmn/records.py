"""The data contracts in one place: the log records agents write and the lake tables dmn keeps.

The JSON Schema files in `schemas/` describe the same records for other languages;
`tests/test_schemas.py` keeps the two in step.
"""

from __future__ import annotations

SCHEMA_VERSION = 1
"""Version of the native log format; bumped on any incompatible change."""

RECORD_TYPES = ("episode", "simulation", "decision", "outcome", "episode_end")

REQUIRED = {
    "episode": ("episode_id", "world", "encoder"),
    "simulation": ("episode_id", "step", "state", "action", "score"),
    "decision": ("episode_id", "step", "state", "action", "source"),
    "outcome": ("episode_id", "step"),
    "episode_end": ("episode_id",),
}
OPTIONAL = {
    "episode": ("agent", "started_at", "meta"),
    "simulation": ("predicted", "vetoed", "cost_ms", "ts"),
    "decision": ("confidence", "latency_ms", "reflex", "ts"),
    "outcome": ("reward", "done", "success"),
    "episode_end": ("return", "success", "ended_at"),
}

SOURCES = ("system1", "system2")
"""Who made a decision: deliberation (System 2) or a reflex (System 1)."""

TENSOR_DTYPES = {"float16": "<f2", "float32": "<f4", "float64": "<f8"}
"""Dtypes a tensor object may carry, with their little-endian numpy codes."""

# Lake tables: record type -> (table, columns). Every table also carries the provenance
# columns below; `world` and `date` are the partition keys (also stored in the files).
# `fingerprint` is DuckDB's hash of the record's content: ingest drops exact repeats by it.
PROVENANCE = {
    "date": "DATE",
    "source_file": "VARCHAR",
    "source_line": "BIGINT",
    "batch": "VARCHAR",
    "ingested_at": "TIMESTAMPTZ",
}
TABLES = {
    "episode": ("episode_starts", {
        "episode_id": "VARCHAR", "world": "VARCHAR", "encoder": "VARCHAR", "agent": "VARCHAR",
        "started_at": "TIMESTAMPTZ", "meta": "JSON",
    }),
    "simulation": ("simulations", {
        "episode_id": "VARCHAR", "world": "VARCHAR", "encoder": "VARCHAR", "step": "BIGINT",
        "state": "FLOAT[]", "action": "VARCHAR", "score": "DOUBLE", "predicted": "FLOAT[]",
        "vetoed": "BOOLEAN", "cost_ms": "DOUBLE", "ts": "TIMESTAMPTZ", "fingerprint": "UBIGINT",
    }),
    "decision": ("decisions", {
        "episode_id": "VARCHAR", "world": "VARCHAR", "encoder": "VARCHAR", "step": "BIGINT",
        "state": "FLOAT[]", "action": "VARCHAR", "source": "VARCHAR", "confidence": "DOUBLE",
        "latency_ms": "DOUBLE", "reflex": "VARCHAR", "ts": "TIMESTAMPTZ", "fingerprint": "UBIGINT",
    }),
    "outcome": ("outcomes", {
        "episode_id": "VARCHAR", "world": "VARCHAR", "encoder": "VARCHAR", "step": "BIGINT",
        "reward": "DOUBLE", "done": "BOOLEAN", "success": "BOOLEAN", "fingerprint": "UBIGINT",
    }),
    "episode_end": ("episode_ends", {
        "episode_id": "VARCHAR", "world": "VARCHAR", "encoder": "VARCHAR", "return": "DOUBLE",
        "success": "BOOLEAN", "ended_at": "TIMESTAMPTZ", "fingerprint": "UBIGINT",
    }),
}
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
