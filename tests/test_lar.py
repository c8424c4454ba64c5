"""Lár: audit files from real lar-engine runs (plain, tensors, signed, tampered) ingest as episodes."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import run

from dmn.lake.store import Store

pytest.importorskip("lar")
from lar_agent import run_agent  # noqa: E402


def configure(home, **lar):
    lines = ["[lar]", 'world = "toy"', 'encoder = "toy-jepa@1"'] + [f'{k} = "{v}"' for k, v in lar.items()]
    (home.root / "dmn.toml").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("tensors", [False, True], ids=["plain-lists", "tensor-logger"])
def test_lar_runs_become_episodes(home, tensors):
    configure(home)
    history = run_agent(home.inbox, runs=2, steps=3, actions=3, tensors=tensors)
    assert len(list(home.inbox.glob("run_*.json"))) == 2
    report = run(home)
    assert report.quarantined == {}
    assert report.records == {"episode": 2, "simulation": 18, "decision": 6, "outcome": 6, "episode_end": 2}
    store = Store(home)
    assert store.sql("SELECT DISTINCT world, encoder FROM episodes").fetchall() == [("toy", "toy-jepa@1")]
    decisions = store.sql("SELECT state, action, step FROM decisions ORDER BY episode_id, step").fetchall()
    logged = sorted(((z, a) for h in history for z, a in zip(h["latents"], h["actions"])), key=lambda x: x[1])
    assert sorted(int(a) for _, a, _ in decisions) == sorted(a for _, a in logged)
    for state, action, _ in decisions:  # every decision's latent is one the agent encoded, bit for bit
        assert any(np.array_equal(np.array(state, np.float32), z) for z, _ in logged)
    sims = store.sql("SELECT step, count(*), count(predicted) FROM simulations GROUP BY 1 ORDER BY 1").fetchall()
    assert sims == [(0, 6, 6), (1, 6, 6), (2, 6, 6)]  # three candidates per decision, attached to it
    stamped = store.sql("""SELECT count(*) FROM decisions d JOIN episodes e USING (episode_id)
                           WHERE d.ts = e.ended_at""").fetchone()[0]
    assert stamped == 6  # Lár stamps runs, not steps: a run's records carry its time, so nights order runs by it
    returns = sorted(r for (r,) in store.sql('SELECT "return" FROM episodes').fetchall())
    assert returns == pytest.approx(sorted(sum(h["rewards"]) for h in history))


def test_signed_runs_verify_and_tampered_ones_are_quarantined(home, monkeypatch):
    configure(home, hmac_secret="s3cret")
    run_agent(home.inbox, runs=2, steps=2, hmac_secret="s3cret")
    first, second = sorted(home.inbox.glob("run_*.json"))
    doc = json.loads(second.read_text())
    doc["steps"][1]["state_diff"]["updated"]["score"] = 99.0  # someone improves a score after the fact
    second.write_text(json.dumps(doc))
    report = run(home)
    assert report.records["episode"] == 1
    assert report.quarantined == {"bad Lár signature": 1}
    row = Store(home).sql("SELECT source_file, hint FROM quarantine").fetchone()
    assert row[0].endswith(second.name) and "changed after it was signed" in row[1]


def test_unsigned_run_is_refused_when_a_secret_is_set(home, monkeypatch):
    run_agent(home.inbox, runs=1, steps=1)
    monkeypatch.setenv("DMN_LAR_HMAC_SECRET", "s3cret")
    assert run(home).quarantined == {"unsigned Lár file": 1}


def test_stock_lar_logger_loses_tensors_and_dmn_says_so(home):
    """What Lár-JEPA's TensorSafeEncoder writes: tensor objects with a shape but no values."""
    configure(home)
    run_agent(home.inbox, runs=1, steps=2, tensors=True)
    path = next(home.inbox.glob("run_*.json"))
    text = path.read_text()
    doc = json.loads(text)
    for step in doc["steps"]:
        for part in (step.get("state_before", {}), step.get("state_after", {}), *step.get("state_diff", {}).values()):
            for value in part.values():
                if isinstance(value, dict) and "b64" in value:
                    del value["b64"]
    path.write_text(json.dumps(doc))
    report = run(home)
    assert report.records == {"episode": 1, "outcome": 2, "episode_end": 1}
    assert report.quarantined == {"latent lost": 8}


def test_latent_compares_as_a_whole():
    from dmn.integrations.lar import latent

    a = latent(np.arange(3.0))
    assert a == latent(np.arange(3.0)) and a != latent(np.ones(3)) and isinstance(a == a, bool)


class Said:
    """A System 1 stand-in that gives one prepared answer."""

    def __init__(self, asked):
        self.asked, self.heard = asked, []

    def ask(self, z):
        self.heard.append(np.asarray(z))
        return self.asked


def test_system1_routes_reflexes_to_the_actuators_and_notes_what_an_audit_withheld():
    from lar.state import GraphState

    from dmn import Asked
    from dmn.integrations.lar import System1, latent

    reflex = SimpleNamespace(action=1, confidence=0.97)
    state = GraphState({"latent": latent(np.ones(4))})
    router = System1(Said(Asked(reflex)))
    assert router(state) == "reflex" and router.reflexes.heard[0].shape == (4,)
    assert (state.get("action_taken"), state.get("decided_by"), state.get("confidence")) == (1, "system1", 0.97)
    assert state.get("latency_ms") >= 0 and state.get("withheld_action") is None
    audit = GraphState({"latent": latent(np.ones(4))})
    assert System1(Said(Asked(None, reflex)))(audit) == "imagine"
    assert (audit.get("decided_by"), audit.get("withheld_action"), audit.get("action_taken")) == ("system2", 1, None)
    silent = GraphState({"latent": latent(np.ones(4)), "withheld_action": 0})  # the last cycle's audit does not linger
    assert System1(Said(Asked(None)))(silent) == "imagine" and silent.get("withheld_action") is None
    vector = GraphState({"latent": latent(np.ones(4))})
    System1(Said(Asked(SimpleNamespace(action=np.ones(2, np.float32), confidence=0.9))))(vector)
    assert vector.get("action_taken") == latent(np.ones(2))  # a vector action compares as a whole in Lár's diff


def test_the_veto_sends_a_dangerous_plan_back_and_lets_a_safe_one_through():
    from lar.state import GraphState

    from dmn.integrations.lar import Veto

    veto = Veto(threshold=0.5, replans=1)
    state = GraphState({"plan_action": 0, "plan_latent": [0.0, 1.0], "plan_danger": 0.9})
    assert veto(state) == "replan" and veto.refused(state) == [0] and state.get("action_taken") is None
    state.set("plan_action", 1)
    state.set("plan_danger", 0.1)
    assert veto(state) == "act" and state.get("action_taken") == 1 and veto.refused(state) == []
    worse = GraphState({"plan_action": 0, "plan_latent": [0.0], "plan_danger": 0.7})
    assert veto(worse) == "replan"
    worse.set("plan_action", 1)
    worse.set("plan_danger", 0.8)
    assert veto(worse) == "act" and worse.get("action_taken") == 0  # out of replans: the least dangerous
    assert veto.dangerous([np.nan], 0.0) and veto.dangerous([0.0], float("nan")) and not veto.dangerous([0.0], 0.2)
    with pytest.raises(ValueError, match="danger estimate"):
        veto(GraphState({"plan_action": 0, "plan_latent": [0.0]}))
    with pytest.raises(ValueError, match="the latent it was imagined"):
        veto(GraphState({"plan_action": 0, "plan_danger": np.float32(0.1)}))
    assert veto(GraphState({"plan_action": 2, "plan_latent": [0.0], "plan_danger": np.float32(0.1)})) == "act"
    with pytest.raises(ValueError, match="threshold"):
        Veto(threshold=2.0)
