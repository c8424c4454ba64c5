"""EpisodeLogger: what an agent logs is what the store holds, whatever threads and tensors it uses."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from conftest import count, run
from dmn import EpisodeLogger
from dmn.errors import DmnError
from dmn.lake.store import Store


def test_logged_values_round_trip(home):
    z = np.random.default_rng(0).standard_normal(16).astype(np.float32)
    with EpisodeLogger(home, world="w", encoder="e", agent="a1") as log:
        eid = log.episode(meta={"seed": 3})
        log.simulation(0, z, "left", 0.25, predicted=z * 2, vetoed=True, cost_ms=12.5)
        log.decision(0, z, "left", source="system2", latency_ms=40.0)
        log.outcome(0, reward=1.0, done=True, success=True)
        log.end(return_=1.0, success=True)
    assert run(home).quarantined == {}
    store = Store(home)
    sim = store.sql("SELECT episode_id, step, state, action, score, predicted, vetoed, cost_ms, ts FROM simulations").fetchone()
    assert sim[0] == eid and sim[1] == 0 and sim[3] == "left" and sim[4] == 0.25 and sim[6] is True and sim[7] == 12.5
    assert np.array_equal(np.array(sim[2], np.float32), z) and np.array_equal(np.array(sim[5], np.float32), z * 2)
    assert sim[8] is not None
    ep = store.sql("SELECT agent, meta, \"return\", success FROM episodes").fetchone()
    assert ep[0] == "a1" and json.loads(ep[1]) == {"seed": 3} and ep[2:] == (1.0, True)


def test_torch_tensors_are_accepted_without_importing_torch_in_dmn(home):
    torch = pytest.importorskip("torch")
    z = torch.randn(8)
    with EpisodeLogger(home, world="w", encoder="e") as log:
        log.episode()
        log.decision(torch.tensor(0), z, torch.tensor(2))
    run(home)
    state, action = Store(home).sql("SELECT state, action FROM decisions").fetchone()
    assert np.array_equal(np.array(state, np.float32), z.numpy()) and action == "2"


def test_threads_share_a_logger_without_losing_records(home):
    with EpisodeLogger(home, world="w", encoder="e", flush_records=37) as log:
        ids = [log.episode(f"ep{i}") for i in range(4)]

        def work(eid: str) -> None:
            for step in range(200):
                log.simulation(step, np.full(4, step, np.float32), step % 3, float(step), episode_id=eid)

        threads = [threading.Thread(target=work, args=(eid,)) for eid in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert run(home).records == {"episode": 4, "simulation": 800}
    assert count(home, "simulations", "state[1] = step") == 800


def test_files_appear_whole(home):
    with EpisodeLogger(home, world="w", encoder="e", flush_records=10) as log:
        log.episode()
        for step in range(25):
            log.decision(step, np.ones(4), 0)
        log.flush(wait=True)
        names = sorted(p.name for p in home.inbox.iterdir())
        assert len(names) == 3 and all(n.endswith(".jsonl") and not n.startswith(".") for n in names)


def test_a_search_logs_its_candidates_in_one_call_and_vectors_round_trip(home):
    rng = np.random.default_rng(0)
    z, elites, predicted = rng.standard_normal(8), rng.uniform(-2, 2, (5, 3)), rng.standard_normal((5, 8))
    scores = 1e6 + np.arange(5) / 100  # close scores stay apart (float64, as simulation() keeps them)
    with EpisodeLogger(home, world="arm", encoder="e") as log:
        log.episode()
        log.candidates(0, elites, scores, predicted=predicted, vetoed=[False, True, False, False, False], cost_ms=2.0)
        log.decision(0, z, elites.mean(0), source="system2", latency_ms=40.0)
    with EpisodeLogger(home, world="cart", encoder="e") as log:
        log.episode()
        log.candidates(0, [0, 1], [0.5, 0.25])  # labels too
        log.decision(0, z, np.array([1]))  # a one-element integer array is a label, as it always was
    report = run(home)
    assert report.quarantined == {} and report.records["simulation"] == 7
    store = Store(home)
    sims = store.sql("SELECT action_vector, score, predicted, vetoed, cost_ms, state FROM simulations "
                     "WHERE world = 'arm' AND action_vector IS NOT NULL ORDER BY score").fetchall()
    assert [s[1] for s in sims] == list(scores) and [s[3] for s in sims] == [False, True, False, False, False]
    np.testing.assert_allclose(np.array([s[0] for s in sims]), elites.astype(np.float32))
    np.testing.assert_allclose(np.array([s[2] for s in sims]), predicted.astype(np.float32))
    assert {(s[4], s[5]) for s in sims} == {(2.0, None)}  # the latent is the decision's, logged once
    decisions = store.sql("SELECT action, action_vector FROM decisions ORDER BY action NULLS FIRST").fetchall()
    np.testing.assert_allclose(decisions[0][1], elites.mean(0).astype(np.float32))
    assert decisions[1] == ("1", None)


@pytest.mark.parametrize("call,message", [
    (lambda log: log.candidates(0, [[0.1], [0.2]], [1.0]), "actions must have .* shape for k = 1"),
    (lambda log: log.candidates(0, [[0.1, float("nan")]], [1.0]), "actions contains NaN"),
    (lambda log: log.candidates(0, [[0.1]], [float("inf")]), "scores contains NaN"),
    (lambda log: log.candidates(0, [], []), "one action, one score"),
    (lambda log: log.candidates(0, [[0.1]], [1.0], predicted=np.zeros((2, 4))), "predicted must have"),
    (lambda log: log.decision(0, [1.0], [0.5, float("inf")]), "NaN"),
    (lambda log: log.decision(0, [1.0, float("nan")], 0), "NaN"),
    (lambda log: log.decision(0, [], 0), "non-empty"),
    (lambda log: log.decision(0, "abc", 0), "numbers"),
    (lambda log: log.decision(-1, [1.0], 0), "step"),
    (lambda log: log.decision(0, [1.0], 1.5), "action"),
    (lambda log: log.decision(0, [1.0], 0, source="gut"), "source"),
    (lambda log: log.simulation(0, [1.0], 0, float("inf")), "score"),
    (lambda log: log.decision(0, np.r_[np.zeros(5000), np.inf], 0), "NaN"),  # a latent too long for the dot product
    (lambda log: log.outcome(0, reward=1.0, episode_id=7), "episode_id must be a string"),
])
def test_bad_values_fail_where_they_are_made(home, call, message):
    with EpisodeLogger(home, world="w", encoder="e") as log:
        log.episode()
        with pytest.raises(ValueError, match=message):
            call(log)


def test_latents_of_huge_finite_values_are_kept(home):
    """Finiteness is read from a latent's dot product with itself, which overflows here: checked value by value."""
    with EpisodeLogger(home, world="w", encoder="e") as log:
        log.episode()
        log.decision(0, [3e38, -3e38, 1.0], 0)


def test_records_before_an_episode_are_refused(home):
    with EpisodeLogger(home, world="w", encoder="e") as log:
        with pytest.raises(ValueError, match="episode"):
            log.decision(0, [1.0], 0)


def test_a_failed_write_is_reported_and_retried(home, tmp_path):
    log = EpisodeLogger(home, world="w", encoder="e")
    log.episode()
    home.inbox.rename(tmp_path / "gone")  # the inbox vanishes under the agent
    with pytest.raises(DmnError, match="cannot write"):
        log.flush(wait=True)
    home.inbox.mkdir()
    log.decision(0, [1.0], 0)
    log.close()
    assert run(home).records == {"episode": 1, "decision": 1}
