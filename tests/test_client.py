"""Wake: the System 1 client answers what the night measured, abstains when it should, and reloads safely."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import threading
import time

import faiss
import numpy as np
import pytest

from conftest import republish
from dmn import ANY_ENCODER, Reflexes
from dmn.bundle import publish
from dmn.bundle.load import load
from dmn.home import Home

@pytest.fixture
def own(world, tmp_path):
    """A private copy of the consolidated home."""
    home, truth = world
    shutil.copytree(home.root, tmp_path / "home")
    return Home.resolve(tmp_path / "home"), truth


def test_lookups_answer_exactly_what_the_night_measured(world):
    home, truth = world
    reflexes = Reflexes.open("synthetic", home=home, encoder="synthetic@1")
    states = np.concatenate([truth.sample(400)[0], truth.far(100)])
    expected = load(home, "synthetic").answer(states)
    one = [reflexes.lookup(z) for z in states]
    batch = reflexes.lookup_batch(states)
    for i, (a, b) in enumerate(zip(one, batch)):
        assert (a is None) == (b is None)
        if a is not None:  # a policy's float32 sums may differ in the last bit between batch sizes
            assert a == b or (a.source == b.source == "policy" and a.confidence == pytest.approx(b.confidence)
                              and (a.action, a.cluster) == (b.action, b.cluster))
        if a is None:
            assert expected.source[i] == ""
        else:
            assert (a.action, a.source, a.confidence) == (int(reflexes._serving.bundle.actions[expected.action[i]]),
                                                          expected.source[i], pytest.approx(expected.confidence[i]))
            assert a.version == "v000001" and a.cluster == expected.situation[i] and a.support > 0
    answered = [a for a in one[:400] if a is not None]
    assert len(answered) >= 0.9 * 400
    assert all(r is None for r in one[400:])  # far from every situation: novel, so silent
    assert all(type(a.action) is int for a in answered)  # integer actions come back as they were logged
    right = sum(a.action == b for a, b in zip(one[:400], truth.sample(400)[1]) if a is not None)
    assert right >= 0.95 * len(answered)


def test_a_lookup_searches_on_the_callers_thread_alone_and_leaves_its_threads_as_they_were(world):
    """FAISS would start a team of OpenMP threads for one query, which on a busy machine waits for threads the
    OS has not scheduled; a lookup runs on one, and the caller's setting is as it was."""
    home, truth = world
    reflexes = Reflexes.open("synthetic", home=home, encoder="synthetic@1")
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(3)
    try:
        assert all(reflexes.lookup(z) is not None for z in truth.sample(20)[0])
        assert faiss.omp_get_max_threads() == 3
    finally:
        faiss.omp_set_num_threads(before)


def test_it_abstains_without_a_bundle_and_for_another_encoder(world, tmp_path):
    home, truth = world
    z = truth.sample(1)[0][0]
    empty = Reflexes.open("synthetic", home=tmp_path / "empty", encoder="synthetic@1")
    assert empty.lookup(z) is None and empty.imagine(z, 0) is None and empty.lookup_batch(z[None]) == [None]
    assert empty.version is None and "no bundle published" in empty.problem
    other = Reflexes.open("synthetic", home=home, encoder="synthetic@2")
    assert other.lookup(z) is None and other.lookup_batch(z[None]) == [None]
    assert "encoder 'synthetic@1', not 'synthetic@2'" in other.problem
    for missing in (None, ""):  # serving latents of another space is the one silent failure: say which space
        with pytest.raises(ValueError, match="encoder must be the version"):
            Reflexes.open("synthetic", home=home, encoder=missing)
    anyone = Reflexes.open("synthetic", home=home, encoder=ANY_ENCODER)  # the opt-out
    assert sum(anyone.lookup(c) is not None for c in truth.centres) >= len(truth.centres) - 1


def test_it_abstains_below_the_calibrated_thresholds(own):
    home, truth = own
    reflexes = Reflexes.open("synthetic", home=home, encoder="synthetic@1", check_every=3600)
    states = truth.sample(200)[0]
    assert sum(r is not None for r in reflexes.lookup_batch(states)) >= 180
    republish(home, thresholds={"table": None, "policy": 1.01})  # nothing is that sure
    assert reflexes.refresh() and reflexes.version == "v000002"
    assert all(reflexes.lookup(z) is None for z in states) and reflexes.lookup_batch(states) == [None] * 200


def test_audits_withhold_answers_and_say_which(world):
    home, truth = world
    states = truth.sample(300)[0]
    always = Reflexes.open("synthetic", home=home, encoder="synthetic@1", audit_rate=1.0)
    assert all(always.lookup(z) is None for z in states)
    asked = [always.ask(z) for z in states]
    assert all(a.reflex is None for a in asked) and sum(a.withheld is not None for a in asked) >= 270
    assert {a.withheld.source for a in asked if a.withheld} <= {"table", "policy"}
    batch = always.ask_batch(states)  # per row: what its audit withheld
    assert [b.withheld is None for b in batch] == [a.withheld is None for a in asked]
    some = Reflexes.open("synthetic", home=home, encoder="synthetic@1", audit_rate=0.2, seed=3)
    silent = sum(some.lookup(z) is None for z in states)
    assert 30 <= silent <= 110  # ~20% of ~300 answers, plus the few it would not answer anyway
    rows = some.ask_batch(states)
    assert 30 <= sum(r.withheld is not None for r in rows) <= 110
    assert all(r.reflex is None for r in rows if r.withheld is not None)
    never = Reflexes.open("synthetic", home=home, encoder="synthetic@1")
    assert never.ask(states[0]).withheld is None and never.ask(states[0]).reflex is not None


def test_imagine_recalls_what_system2_expected(world):
    home, truth = world
    reflexes = Reflexes.open("synthetic", home=home, encoder="synthetic@1")
    for s in range(len(truth.centres)):
        best = reflexes.imagine(truth.centres[s], int(truth.best[s]))
        vetoed = reflexes.imagine(truth.centres[s], str(truth.vetoed[s]))
        assert best.danger == 0 and vetoed.danger == 1 and best.score > vetoed.score
        assert best.outcome >= 0 and 0 < best.outcome_share <= 1 and best.version == "v000001"
    assert reflexes.imagine(truth.far(1)[0], 0) is None  # novel: no recollection
    assert reflexes.imagine(truth.centres[0], "jump") is None  # never imagined here


@pytest.mark.parametrize("bad,message", [
    (np.zeros(63), "64 dimensions"), (np.full(64, np.nan), "finite"), (np.zeros((2, 64)), "1-D vector"),
    (["a"] * 64, "must be numbers"), (5.0, "1-D vector"), (np.r_[np.zeros(63), np.inf], "finite"),
])
def test_bad_states_raise_a_clear_value_error(world, bad, message):
    home, _ = world
    reflexes = Reflexes.open("synthetic", home=home, encoder="synthetic@1")
    with pytest.raises(ValueError, match=message):
        reflexes.lookup(bad)
    with pytest.raises(ValueError):
        reflexes.imagine(bad, 0)


def test_bad_batches_and_settings_raise_a_clear_value_error(world):
    home, _ = world
    reflexes = Reflexes.open("synthetic", home=home, encoder="synthetic@1")
    for bad, message in [(np.zeros(64), r"\(n, d\) matrix"), (np.zeros((3, 5)), "64 dimensions"),
                         (np.full((2, 64), np.inf), "finite")]:
        with pytest.raises(ValueError, match=message):
            reflexes.lookup_batch(bad)
    with pytest.raises(ValueError, match="audit_rate"):
        Reflexes.open("synthetic", home=home, encoder="synthetic@1", audit_rate=1.5)


def test_a_bundle_from_before_vector_actions_still_serves(own):
    home, truth = own
    states = truth.sample(200)[0]
    before = load(home, "synthetic").answer(states)
    with np.load(publish.folder(home, "synthetic") / "v000001" / "policy.npz") as npz:
        weights = {k: npz[k] for k in npz.files if k not in ("low", "high")}  # what such a bundle holds
    buffer = io.BytesIO()
    np.savez(buffer, **weights)
    assert republish(home, {"policy.npz": buffer.getvalue()}) == "v000002"
    bundle = load(home, "synthetic")
    after = bundle.answer(states)
    assert bundle.version == "v000002" and bundle.action_dim == 0
    np.testing.assert_array_equal(after.action, before.action)
    np.testing.assert_allclose(after.confidence, before.confidence)


def test_a_tampered_bundle_is_never_served(own, monkeypatch):
    home, truth = own
    z = truth.sample(1)[0][0]
    reflexes = Reflexes.open("synthetic", home=home, encoder="synthetic@1", check_every=3600)
    version = republish(home)
    (publish.folder(home, "synthetic") / version / "table.parquet").write_bytes(b"PAR1 not really")
    assert not reflexes.refresh()
    assert reflexes.version == "v000001" and reflexes.lookup(z).version == "v000001"
    assert "table.parquet does not match its checksum" in reflexes.problem and "still serving v000001" in reflexes.problem
    fresh = Reflexes.open("synthetic", home=home, encoder="synthetic@1")
    assert fresh.lookup(z) is None and "abstaining" in fresh.problem
    monkeypatch.setenv("DMN_SIGNING_KEY", "k")
    (publish.folder(home, "synthetic") / "CURRENT").write_text("v000001")
    unsigned = Reflexes.open("synthetic", home=home, encoder="synthetic@1")
    assert unsigned.lookup(z) is None and "unsigned" in unsigned.problem
    signed = republish(home)
    assert Reflexes.open("synthetic", home=home, encoder="synthetic@1").lookup(z).version == signed


def test_hot_reload_while_threads_look_up(own):
    home, truth = own
    states = truth.sample(64)[0]
    reflexes = Reflexes.open("synthetic", home=home, encoder="synthetic@1", check_every=0.01)
    seen: list = []
    errors: list = []
    stop = threading.Event()

    def reader(i: int) -> None:
        try:
            while not stop.is_set():
                z = states[i % len(states)]
                seen.append((i % len(states), reflexes.lookup(z)))
                i += 7
        except Exception as exc:  # noqa: BLE001 - any error fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    published = ["v000001"]
    for n in range(6):
        thresholds = {"table": None, "policy": 1.01} if n % 2 == 0 else load(home, "synthetic", "v000001").manifest[
            "thresholds"]
        published.append(republish(home, thresholds=thresholds))
        deadline = time.monotonic() + 10  # served before the next one is published
        while reflexes.version != published[-1] and time.monotonic() < deadline:
            time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert not errors and reflexes.version == published[-1]
    versions = {r.version for _, r in seen if r is not None}
    assert versions <= set(published) and len(versions) >= 2
    silent = {v for v in published[1::2]}  # the bundles that answer nothing
    assert not versions & silent
    bundles = {v: load(home, "synthetic", v) for v in versions}
    for i, r in seen[:: max(1, len(seen) // 500)]:
        if r is not None:  # each answer is exactly what its one bundle says
            answer = bundles[r.version].answer(states[i:i + 1])
            assert str(r.action) == bundles[r.version].actions[answer.action[0]] and r.source == answer.source[0]


def test_a_lookup_never_imports_torch(world):
    home, truth = world
    code = f"""
import sys, numpy as np
import dmn
r = dmn.Reflexes.open("synthetic", home={str(home.root)!r}, encoder="synthetic@1")
z = np.load({str(home.root / 'z.npy')!r})
assert r.lookup(z) is not None and r.lookup_batch(z[None])[0] is not None and r.imagine(z, 0) is not None
assert "torch" not in sys.modules, "torch was imported"
"""
    np.save(home.root / "z.npy", truth.sample(1)[0][0])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_one_state_path_and_the_batch_path_of_the_rule_agree_everywhere():
    """`Rule.decide_one` (a lookup) and `Rule.decide` (the night's evaluation, `lookup_batch`) on states where
    the table answers, the policy answers, the policy is not sure enough, a situation is demoted, and on
    novel states: the same answer, state by state."""
    import faiss

    from dmn.bundle.decide import Rule

    rng = np.random.default_rng(0)
    k, d, actions = 12, 8, 3
    centres = rng.standard_normal((k, d)).astype(np.float32) * 4
    index = faiss.IndexFlatL2(d)
    index.add(centres)
    table = {"best": rng.integers(actions, size=k), "confidence": rng.uniform(0.5, 1.0, k),
             "radius": rng.uniform(0.5, 1.5, k), "support": rng.uniform(0, 10, k), "demoted": rng.random(k) < 0.2}
    table["core"] = table["radius"] * rng.uniform(0.3, 0.9, k)
    hidden = 16
    policy = {"mean": np.zeros(d, np.float32), "std": np.ones(d, np.float32),
              "w1": rng.standard_normal((d, hidden)).astype(np.float32), "b1": np.zeros(hidden, np.float32),
              "w2": rng.standard_normal((hidden, hidden)).astype(np.float32), "b2": np.zeros(hidden, np.float32),
              "w3": rng.standard_normal((hidden, actions)).astype(np.float32), "b3": np.zeros(actions, np.float32),
              "scale": np.float64(0.3), "distance": np.float64(-0.5), "shift": np.float64(0.5),
              "low": np.zeros(0, np.float32), "high": np.zeros(0, np.float32)}
    rule = Rule.prepare(index, table, policy, {"table": 0.7, "policy": 0.6}, min_support=3.0, policy_reach=2.0)
    states = (centres[rng.integers(k, size=3000)] + rng.standard_normal((3000, d)) * rng.uniform(0, 2, (3000, 1))
              ).astype(np.float32)
    batch = rule.decide(states)
    assert {"table", "policy", ""} <= set(batch.source)  # every branch of the rule is taken
    for i, x in enumerate(states):
        one = rule.decide_one(x)
        if batch.source[i] == "":
            assert one is None, i
        else:
            assert one is not None and (one[0], one[2], one[3]) == (batch.action[i], batch.source[i], batch.situation[i])
            assert one[1] == pytest.approx(batch.confidence[i], rel=1e-5)
