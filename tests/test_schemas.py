"""One record contract (`dmn.records`): the JSON Schemas in schemas/ and the logger follow from it."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest

from dmn import EpisodeLogger
from dmn.records import RECORD_TYPES, RECORDS, json_schemas, schema_text

jsonschema = pytest.importorskip("jsonschema")
from referencing import Registry, Resource  # noqa: E402

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def load() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in SCHEMAS.glob("*.schema.json")}


def validator() -> jsonschema.Draft202012Validator:
    schemas = load()
    registry = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas.values())
    return jsonschema.Draft202012Validator(schemas["record.schema.json"], registry=registry)


def test_the_schema_files_are_exactly_what_the_contract_generates():
    generated = json_schemas()
    assert sorted(p.name for p in SCHEMAS.glob("*.json")) == sorted(generated)
    for name, schema in generated.items():  # after a change to dmn.records: write_schemas()
        assert (SCHEMAS / name).read_text(encoding="utf-8") == schema_text(schema), name


def test_the_loggers_methods_take_exactly_the_fields_of_their_records():
    """Each record type has one logger method; its parameters are the record's fields, less those the
    logger fills itself (the episode's id, world and encoder, and the times)."""
    methods = {"episode": "episode", "simulation": "simulation", "decision": "decision", "outcome": "outcome",
               "episode_end": "end"}
    filled = {"world", "encoder", "started_at", "ended_at", "ts", "agent"}
    assert set(methods) == set(RECORD_TYPES)
    for rtype, method in methods.items():
        params = {p.rstrip("_") for p in inspect.signature(getattr(EpisodeLogger, method)).parameters} - {"self"}
        fields = {f.name for f in RECORDS[rtype].fields} - filled
        assert params == fields, rtype


def test_what_the_logger_writes_is_valid(home):
    with EpisodeLogger(home, world="w", encoder="e", agent="a") as log:
        log.episode(meta={"k": 1})
        log.simulation(0, np.ones(8), 2, 0.5, predicted=np.zeros(8), vetoed=False, cost_ms=3.0)
        log.decision(0, np.ones(8), 2, confidence=0.9, latency_ms=5.0)
        log.outcome(0, reward=1.0, done=False)
        log.end(return_=1.0, success=True)
    check = validator()
    lines = [json.loads(line) for p in home.inbox.glob("*.jsonl") for line in p.read_text().splitlines()]
    assert {r["type"] for r in lines} == set(RECORD_TYPES)
    for record in lines:
        check.validate(record)


def test_the_schema_rejects_what_ingest_quarantines():
    check = validator()
    bad = [
        {"type": "simulation", "episode_id": "e", "step": -1, "state": [1.0], "action": 1, "score": 0},
        {"type": "decision", "episode_id": "e", "step": 0, "state": [1.0], "action": 1, "source": "gut"},
        {"type": "decision", "episode_id": "e", "step": 0, "state": {"__type__": "Tensor", "shape": [1]}, "action": 1, "source": "system1"},
        {"type": "episode", "episode_id": "e", "world": "w"},
        {"type": "dream", "episode_id": "e"},
    ]
    for record in bad:
        assert not check.is_valid(record), record
