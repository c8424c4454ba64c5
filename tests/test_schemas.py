"""The JSON Schemas in schemas/ describe exactly the records dmn reads and writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dmn import EpisodeLogger
from dmn.records import OPTIONAL, RECORD_TYPES, REQUIRED, SCHEMA_VERSION

jsonschema = pytest.importorskip("jsonschema")
from referencing import Registry, Resource  # noqa: E402

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def load() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in SCHEMAS.glob("*.schema.json")}


def validator() -> jsonschema.Draft202012Validator:
    schemas = load()
    registry = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas.values())
    return jsonschema.Draft202012Validator(schemas["record.schema.json"], registry=registry)


def test_schemas_match_the_contract_in_code():
    schemas = load()
    for rtype in RECORD_TYPES:
        schema = schemas[f"{rtype}.schema.json"]
        assert schema["x-dmn-schema-version"] == SCHEMA_VERSION
        assert set(schema["required"]) == {"type", *REQUIRED[rtype]}
        assert set(schema["properties"]) == {"type", *REQUIRED[rtype], *OPTIONAL[rtype]}


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
