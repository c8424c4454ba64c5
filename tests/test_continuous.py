"""Continuous actions: a world whose System 2 plans action vectors gets reflexes that are vectors, near its choices."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import dmn, night

from dmn import Candidate, Decider, EpisodeLogger, Plan, Reflexes
from dmn.bundle.load import load
from dmn.config import ConsolidateSettings
from dmn.home import Home
from dmn.lake.ingest import ingest
from dmn.lake.store import Store
from dmn.worlds.synthetic import write_vector_logs

FAST = ConsolidateSettings(policy_hidden=64, policy_epochs=15)


@pytest.fixture(scope="module")
def arm(tmp_path_factory):
    """A 7-D arm in a 768-d latent space, its System 2 noisy around each situation's true best action, consolidated once."""
    home = Home.resolve(tmp_path_factory.mktemp("arm") / "home")
    truth = write_vector_logs(home, situations=16, action_dim=7, dim=768, episodes=120, steps=20, action_noise=0.05)
    nights = night(home, FAST)
    assert [(n.world, n.status) for n in nights] == [("arm", "published")], nights[0].reason
    return home, truth, nights[0]


def _error(actions: np.ndarray, truth: np.ndarray, manifest: dict) -> np.ndarray:
    """Distance from the true best action, in the bundle's units: RMS over dimensions, each in its range."""
    span = np.subtract(manifest["action_high"], manifest["action_low"])
    return np.sqrt((((actions - truth) / span) ** 2).mean(1))


def test_reflexes_land_near_the_true_action_and_abstain_far_from_experience(arm):
    home, truth, consolidation = arm
    bundle = load(home, "arm")
    states, best = truth.sample(3000)
    answers = bundle.answer(states)
    answered = ~np.isnan(answers.confidence)
    assert answers.action.shape == (3000, 7) and answers.action.dtype == np.float32
    assert answered.mean() >= 0.9
    assert (_error(answers.action[answered], best[answered], bundle.manifest) <= bundle.manifest["action_tolerance"]
            ).mean() >= 0.95
    assert np.isnan(bundle.answer(truth.far(1000)).confidence).mean() >= 0.95
    combined = consolidation.metrics["combined"]
    assert combined["coverage"] >= 0.9 and combined["precision"] >= 0.95
    assert 0 < combined["action_error"] < bundle.manifest["action_tolerance"]
    assert "exact_precision" not in combined  # no action is System 2's very choice in a continuous world


def test_the_table_holds_system2s_action_its_spread_and_what_it_imagined(arm):
    home, truth, _ = arm
    bundle = load(home, "arm")
    m = bundle.manifest
    assert m["action_dim"] == 7 and m["actions"] == [] and len(m["action_low"]) == len(m["action_high"]) == 7
    table = bundle.table
    best = np.array(table["best_action"].to_pylist(), np.float32)
    situation = bundle.index.search(truth.centres, 1)[1][:, 0]  # each true situation's nearest table row
    assert (_error(best[situation], truth.best, m) <= m["action_tolerance"]).all()
    spread = np.array(table["spread"].to_pylist())
    assert spread.shape == (bundle.index.ntotal, 7) and (spread[situation] < 0.1).all()  # System 2's noise is 0.05
    assert ((np.array(table["agreement"]) >= np.array(table["confidence"])) & (np.array(table["confidence"]) > 0)).all()
    per_situation = np.bincount(bundle.candidates["cluster"].to_numpy())
    assert per_situation.max() <= 64 and (per_situation[situation] > 0).all()


def test_the_client_answers_vectors_proposes_where_it_abstains_and_recalls_imagined_candidates(arm, tmp_path):
    home, truth, _ = arm
    reflexes = Reflexes.open("arm", home=home, encoder="arm@1")
    states, best = truth.sample(50, seed=7)
    answers = load(home, "arm").answer(states)
    answered = ~np.isnan(answers.confidence)
    assert answered.mean() >= 0.9
    for z, batch, expected, said in zip(states, reflexes.lookup_batch(states), answers.action, answered):
        one = reflexes.lookup(z)
        assert (one is not None) == (batch is not None) == said  # the client serves the bundle's own rule
        if said:
            assert one.action.dtype == np.float32 and one.action.shape == (7,)
            np.testing.assert_allclose(one.action, expected, atol=1e-5)
            np.testing.assert_allclose(batch.action, expected, atol=1e-5)
    proposal = reflexes.propose(states[0])
    assert proposal.spread.shape == (7,) and (proposal.spread > 0).all() and 0 <= proposal.confidence <= 1
    assert _error(proposal.action[None], best[:1], reflexes.manifest)[0] <= 0.1
    assert reflexes.propose(truth.far(1)[0]) is None

    # imagine(z, action): the candidates System 2 imagined nearest the action, scored as it scored them.
    near, away = reflexes.imagine(states[0], best[0]), reflexes.imagine(states[0], -best[0])
    assert near.score > away.score and near.danger == 0 and near.version == reflexes.version
    assert reflexes.imagine(truth.far(1)[0], best[0]) is None
    with pytest.raises(ValueError, match="an action must have 7 dimensions"):
        reflexes.imagine(states[0], [0.0, 1.0])

    # An abstaining client still proposes: a planner can start its search there.
    sure = Reflexes.open("arm", home=home, encoder="arm@1", audit_rate=1.0)
    asked = sure.ask(states[0])
    assert asked.reflex is None and asked.withheld is not None and sure.propose(states[0]) is not None
    assert asked.withheld.action.dtype == np.float32 and asked.withheld.action.shape == (7,)


def test_action_vectors_are_a_float_column_sql_reads_directly(arm):
    home, truth, _ = arm
    con = Store(home).connect()
    kind, = con.execute("SELECT typeof(action_vector) FROM decisions LIMIT 1").fetchone()
    assert kind.startswith("FLOAT[")
    rows = con.execute("""SELECT dim, stddev(a) FROM (
                          SELECT unnest(action_vector) AS a, generate_subscripts(action_vector, 1) AS dim
                          FROM decisions WHERE source = 'system2') GROUP BY dim ORDER BY dim""").fetchall()
    assert [d for d, _ in rows] == list(range(1, 8)) and all(0 < spread < 1.5 for _, spread in rows)
    nulls, = con.execute("SELECT count(*) FROM decisions WHERE action IS NOT NULL").fetchone()
    assert nulls == 0  # a continuous world's actions are its vectors, not labels
    out = dmn("sql", "SELECT count(*) AS n, max(len(action_vector)) AS k FROM simulations", "-f", "csv", home=home)
    assert out.returncode == 0 and out.stdout.splitlines()[1] == "38400,7"


def test_one_call_decides_in_vectors_from_both_systems(arm, tmp_path):
    home, truth, _ = arm
    log_home = Home.resolve(tmp_path / "log")
    reflexes = Reflexes.open("arm", home=home, encoder="arm@1", audit_rate=0.2, seed=0)
    heard = []

    def planner(z, proposal):  # a continuous planner may start from System 1's mean and spread
        heard.append(proposal)
        return Plan(np.zeros(7, np.float32), [Candidate(np.zeros(7), 0.0), Candidate(np.ones(7), -1.0, vetoed=True)])

    with Decider(reflexes, EpisodeLogger(log_home, world="arm", encoder="arm@1")) as decider:
        decider.episode("e")
        decisions = [decider.decide(i, z, planner) for i, z in enumerate(truth.sample(60, seed=5)[0])]
    for d in decisions:
        assert isinstance(d.action, np.ndarray) and d.action.dtype == np.float32 and d.action.shape == (7,)
    audits = [d for d in decisions if d.withheld is not None]
    assert audits and all(d.withheld.action.shape == (7,) for d in audits)
    assert any(d.source == "system1" for d in decisions)
    assert all(p is None or p.spread.shape == (7,) for p in heard) and len(heard) == len(decisions) - sum(
        d.source == "system1" for d in decisions)
    ingest(log_home)
    store = Store(log_home)
    assert store.sql("SELECT count(*) FROM decisions WHERE reflex_vector IS NOT NULL").fetchone()[0] == len(audits)
    assert store.sql("SELECT count(*) FROM simulations").fetchone()[0] == 2 * (len(decisions) - sum(
        d.source == "system1" for d in decisions))
