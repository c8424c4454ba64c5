"""Sleep: System 2's logs in, a verified, versioned System 1 bundle out — and only when it is good."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import faiss
import numpy as np
import pytest

from conftest import decision, dmn, episode, night, simulation, write_jsonl
from dmn.bundle import publish
from dmn.bundle.load import load
from dmn.config import ConsolidateSettings
from dmn.sleep.night import consolidate
from dmn.errors import Busy, DmnError
from dmn.sleep.evaluate import split
from dmn.sleep.experience import select
from dmn.lake.ingest import ingest
from dmn.lake.store import Store
from dmn.ops.sql import store
from dmn.worlds.synthetic import write_logs

FAST = ConsolidateSettings(policy_hidden=64, policy_epochs=15)


@pytest.fixture(scope="module")
def consolidated(tmp_path_factory):
    """One synthetic world in 768-d, consolidated once (shared by the tests that only read it)."""
    from dmn.home import Home

    home = Home.resolve(tmp_path_factory.mktemp("synthetic") / "home")
    truth = write_logs(home, situations=16, dim=768, episodes=120, steps=20, accuracy=0.97)
    nights = night(home, FAST)
    return home, truth, nights


def test_reflexes_recall_the_true_action_and_abstain_far_from_experience(consolidated):
    home, truth, nights = consolidated
    assert [(n.world, n.status, n.version) for n in nights] == [("synthetic", "published", "v000001")]
    bundle = load(home, "synthetic")
    states, best = truth.sample(3000)
    answers = bundle.answer(states)
    answered = ~np.isnan(answers.confidence)
    assert answered.mean() >= 0.9
    assert (answers.action[answered] == best[answered]).mean() >= 0.95
    far = bundle.answer(truth.far(1000))
    assert np.isnan(far.confidence).mean() >= 0.95
    combined = nights[0].metrics["combined"]
    assert combined["coverage"] >= 0.9 and combined["precision"] >= 0.95


def test_the_table_knows_what_system2_avoided_and_imagined(consolidated):
    home, truth, _ = consolidated
    bundle = load(home, "synthetic")
    table = bundle.table.to_pylist()
    situation = bundle.index.search(truth.centres, 1)[1][:, 0]
    for s, row in enumerate(table[i] for i in situation):
        assert row["best_action"] == str(truth.best[s])
        assert row["avoid"] == [str(truth.vetoed[s])]
        assert 0 < row["confidence"] <= row["agreement"] <= 1 and row["radius"] > 0
        # Imagination: each action's outcome types form a distribution.
        assert all(abs(sum(kinds) - 1) < 1e-6 for kinds in row["outcome_types"])
    assert bundle.outcomes.num_rows == bundle.outcome_index.ntotal == 16


def test_a_night_without_new_experience_publishes_nothing_and_says_so(consolidated):
    home, _, _ = consolidated
    again = night(home, FAST)
    assert [(n.status, n.version) for n in again] == [("nothing new", None)]
    assert "no new System 2 experience" in again[0].reason
    assert publish.versions(home, "synthetic") == ["v000001"]
    rows = store(home).sql("SELECT status, version, coverage >= 0.9 FROM consolidations ORDER BY started_at").fetchall()
    assert rows[:2] == [("published", "v000001", True), ("nothing new", None, None)]
    artifacts = store(home).sql("SELECT world, version, current, dim, precision >= 0.95 FROM artifacts").fetchall()
    assert artifacts == [("synthetic", "v000001", True, 768, True)]


def test_the_gate_keeps_the_current_bundle_when_system1_would_guess(home):
    write_logs(home, world="coin", situations=4, dim=16, episodes=30, steps=10, accuracy=0.5)
    nights = night(home, FAST)
    assert nights[0].status == "kept" and publish.current(home, "coin") is None
    assert "precision" in nights[0].reason


def test_versions_checksums_signatures_and_rollback(home, monkeypatch):
    monkeypatch.setenv("DMN_SIGNING_KEY", "night-key")
    for day in range(2):
        write_logs(home, world="w", situations=8, dim=32, episodes=30, steps=10, accuracy=1.0, day=day)
        assert night(home, FAST)[0].status == "published"
    assert publish.versions(home, "w") == ["v000001", "v000002"] and publish.current(home, "w") == "v000002"
    assert load(home, "w").manifest["signature"]
    assert publish.rollback(home, "w") == "v000001" and load(home, "w").version == "v000001"
    assert publish.rollback(home, "w", "2") == "v000002"
    with pytest.raises(DmnError, match="no bundle 'v000009'"):
        publish.rollback(home, "w", "v000009")
    with pytest.raises(DmnError, match="not a bundle version"):
        load(home, "w", "../w/v000001")
    monkeypatch.setenv("DMN_SIGNING_KEY", "another-key")
    with pytest.raises(DmnError, match="bad signature"):
        load(home, "w")
    monkeypatch.delenv("DMN_SIGNING_KEY")
    policy = publish.folder(home, "w") / "v000001" / "policy.npz"
    policy.write_bytes(policy.read_bytes() + b"x")
    with pytest.raises(DmnError, match="policy.npz does not match its checksum"):
        publish.rollback(home, "w", "v000001")
    assert publish.current(home, "w") == "v000002"  # a damaged bundle is never switched to


def test_experience_is_labelled_by_system2_weighted_by_age_and_split_by_episode(home):
    records = [episode(f"e{i}", world="w", encoder="enc", started_at=1_700_000_000 + i) for i in range(6)]
    for i in range(6):
        ts = 1_700_000_000 + 86400 * i
        records += [decision(f"e{i}", 0, ts=ts), decision(f"e{i}", 1, source="system1", ts=ts),
                    decision(f"e{i}", 2, source="system1", action=0, ts=ts),  # audited: System 2 says 2
                    simulation(f"e{i}", 2, action=2, score=0.9, ts=ts), simulation(f"e{i}", 2, action=0, score=0.1, ts=ts),
                    simulation(f"e{i}", 2, action=1, score=1.5, vetoed=True, ts=ts)]
    write_jsonl(home.inbox / "a.jsonl", records)
    ingest(home)
    now = 1_700_000_000 + 86400 * 5
    exp = select(Store(home), "w", "enc", ConsolidateSettings(half_life_days=1.0), now=now)
    assert len(exp.label) == 12  # per episode: the System 2 step and the audited one; not the unaudited reflex
    audited = exp.reflex >= 0
    assert [exp.actions[a] for a in exp.label[audited]] == ["2"] * 6  # best not vetoed, not the vetoed 1.5
    assert [exp.actions[a] for a in exp.reflex[audited]] == ["0"] * 6
    # Each audit also stands for its episode's unchecked reflex step; System 2's own steps for themselves.
    assert exp.represents[audited].tolist() == [2.0] * 6 and exp.represents[~audited].tolist() == [1.0] * 6
    assert exp.weight.max() == pytest.approx(1.0) and exp.weight.min() == pytest.approx(2.0**-5)
    parts = split(exp, ConsolidateSettings(validation_share=0.2, test_share=0.2))
    episodes = [set(exp.episode[p]) for p in (parts.train, parts.validation, parts.test)]
    # Whole episodes; the newest holding 40% of the steps held out, dealt newest first to test, validation, test.
    assert episodes == [{"e0", "e1", "e2"}, {"e4"}, {"e3", "e5"}]
    windowed = select(Store(home), "w", "enc", ConsolidateSettings(window_days=2.5), now=now)
    assert set(windowed.episode) == {"e3", "e4", "e5"}


def test_two_consolidations_never_overlap(home):
    with home.lock("consolidate"):
        with pytest.raises(Busy, match="another dmn process"):
            consolidate(home, settings=FAST)
        busy = dmn("consolidate", home=home)
    assert busy.returncode == 1 and "another dmn process" in busy.stderr and "Traceback" not in busy.stderr
    # Asked to wait, the second one waits for the first to finish, then runs.
    write_logs(home, situations=4, dim=16, episodes=40, steps=20, accuracy=1.0)
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nfrom dmn.home import Home\n"
                               f"with Home.resolve({str(home.root)!r}).lock('consolidate'):\n"
                               "    print('held', flush=True); sys.stdin.readline()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    waiter = subprocess.Popen([sys.executable, "-m", "dmn", "consolidate", "--wait", "60", "--json", "--home",
                               str(home.root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60  # it ingests the inbox first, then waits for the lock
    while not list(home.catalog.glob("*.json")) and time.monotonic() < deadline and waiter.poll() is None:
        time.sleep(0.05)
    assert list(home.catalog.glob("*.json")) and waiter.poll() is None  # ingested, and waiting
    holder.communicate("release\n")
    out, err = waiter.communicate(timeout=120)
    assert holder.returncode == 0 and waiter.returncode == 0, err
    assert json.loads(out.splitlines()[0])["status"] == "published"


def test_consolidate_and_rollback_commands(home):
    (home.root / "dmn.toml").write_text("[consolidate]\npolicy_hidden = 64\npolicy_epochs = 10\n")
    write_logs(home, world="w", situations=8, dim=32, episodes=30, steps=10, accuracy=1.0)
    done = dmn("consolidate", "--json", home=home)
    assert done.returncode == 0, done.stderr
    night = json.loads(done.stdout)
    assert night["status"] == "published" and night["version"] == "v000001"
    assert set(night["seconds"]) == {"select", "cluster", "outcomes", "table", "policy", "evaluate", "publish"}
    table = dmn("consolidate", home=home)
    assert table.returncode == 0 and "nothing new" in table.stdout
    refused = dmn("rollback", "--world", "w", home=home)
    assert refused.returncode == 1 and "no bundle older than v000001" in refused.stderr


def test_a_failed_night_is_recorded_and_reported(home):
    write_logs(home, world="short", situations=2, dim=8, episodes=2, steps=5)
    failed = dmn("consolidate", home=home)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "consolidation failed for short: 2 episode(s): at least 3 are needed" in failed.stderr
    rows = store(home).sql("SELECT world, status, reason FROM consolidations").fetchall()
    assert rows == [("short", "failed", "2 episode(s): at least 3 are needed to train, validate and test")]


def test_pca_speeds_the_situation_index_and_lookups_still_take_raw_latents(home):
    truth = write_logs(home, world="w", situations=8, dim=256, episodes=30, steps=10, accuracy=1.0)
    done = night(home, ConsolidateSettings(policy_hidden=64, policy_epochs=10, pca_dims=16))[0]
    assert done.status == "published", done.reason
    bundle = load(home, "w")
    pca = faiss.downcast_index(bundle.index.base_index)  # candidates found in PCA space, re-ranked exactly
    assert bundle.index.d == 256 and pca.index.d == 16 and bundle.index.k_factor > 1
    states, best = truth.sample(500)
    answers = bundle.answer(states)
    answered = ~np.isnan(answers.confidence)
    assert answered.mean() > 0.9 and (answers.action[answered] == best[answered]).mean() > 0.95
    exact = faiss.IndexFlatL2(256)
    exact.add(bundle.index.reconstruct_n(0, bundle.index.ntotal))
    assert np.allclose(bundle.index.search(states, 1)[0], exact.search(states, 1)[0], rtol=1e-3)  # full-space distances
    assert np.isnan(bundle.answer(truth.far(200)).confidence).mean() >= 0.95  # novelty judged in the full space
