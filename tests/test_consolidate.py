"""Sleep: System 2's logs in, a verified, versioned System 1 bundle out — and only when it is good."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from types import SimpleNamespace

import faiss
import numpy as np
import pytest

from conftest import decision, dmn, episode, night, simulation, write_jsonl
from dmn import EpisodeLogger
from dmn.bundle import publish
from dmn.bundle.decide import nearest
from dmn.bundle.diff import compare
from dmn.bundle.load import load
from dmn.config import ConsolidateSettings
from dmn.errors import Busy, DmnError
from dmn.lake.ingest import ingest
from dmn.lake.store import Store
from dmn.ops.sql import store
from dmn.sleep.cluster import POINTS_PER_CENTROID, situation_index
from dmn.sleep.evaluate import split
from dmn.sleep.experience import Window
from dmn.sleep.night import consolidate
from dmn.sleep.states import States, apply, draw, situations
from dmn.sleep.train import train_policy
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


def test_the_gate_refuses_a_bundle_that_would_guess_and_says_so(home):
    """A System 2 whose imagination is a coin flip cannot be recalled: nothing is published, and with no bundle
    to keep the night says "refused", not "kept"."""
    write_logs(home, world="coin", situations=4, dim=16, episodes=30, steps=10, accuracy=0.5)
    nights = night(home, FAST)
    assert nights[0].status == "refused" and publish.current(home, "coin") is None
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
    exp = Window(Store(home), "w", "enc", ConsolidateSettings(half_life_days=1.0), now=now).experience()
    assert len(exp.label) == 12  # per episode: the System 2 step and the audited one; not the unaudited reflex
    audited = exp.reflex >= 0
    assert [exp.actions[a] for a in exp.label[audited]] == ["2"] * 6  # best not vetoed, not the vetoed 1.5
    assert [exp.actions[a] for a in exp.reflex[audited]] == ["0"] * 6
    # Each audit also stands for its episode's unchecked reflex step; System 2's own steps for themselves.
    assert exp.represents[audited].tolist() == [2.0] * 6 and exp.represents[~audited].tolist() == [1.0] * 6
    assert exp.weight.max() == pytest.approx(1.0) and exp.weight.min() == pytest.approx(2.0**-5)
    parts = split(exp, ConsolidateSettings(validation_share=0.2, test_share=0.2))
    episodes = [set(exp.episode[p]) for p in (parts.train, parts.validation, parts.test)]
    # Whole episodes, newest first dealt in turn to test, training, validation, training, until 40% of the
    # steps are held out; the older ones train.
    assert episodes == [{"e4", "e2", "e0"}, {"e3"}, {"e5", "e1"}]
    windowed = Window(Store(home), "w", "enc", ConsolidateSettings(window_days=2.5), now=now).experience()
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
    assert set(night["seconds"]) == {"select", "cluster", "outcomes", "table", "policy", "evaluate", "publish",
                                     "mapped"}
    seconds = night["seconds"]
    assert seconds["mapped"] < seconds["cluster"] + seconds["policy"] + seconds["evaluate"]  # a part of them
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


class Counted(States):
    """States that count how many rows each `take` brings into memory."""

    def __init__(self, x: np.ndarray):
        super().__init__(x, 100)
        self.taken: list[int] = []

    def take(self, rows: np.ndarray) -> np.ndarray:
        self.taken.append(len(rows))
        return super().take(rows)


def test_the_night_takes_only_bounded_samples_of_its_states_into_memory(home, monkeypatch):
    """Fitting the situations (k-means, PCA) and the policy takes bounded samples of the states; what is
    computed for every state is mapped over them (on the Ray engine, where they are)."""
    write_logs(home, situations=4, dim=48, episodes=60, steps=20, accuracy=1.0)
    ingest(home)
    s = ConsolidateSettings(policy_hidden=32, policy_epochs=3, policy_sample=300)
    exp = Window(Store(home), "synthetic", "synthetic@1", s).experience()
    exp.states = Counted(exp.states.x)
    parts = split(exp, s)
    assert len(parts.train) > 600 and len(parts.validation) > 150
    monkeypatch.setattr("dmn.sleep.cluster.PCA_SAMPLE", 400)
    index = situation_index(exp.states, parts.train, 2, exp.weight, 8, 0)
    assert exp.states.taken == [2 * POINTS_PER_CENTROID, 400]
    cluster, distance = exp.states.map(situations, parts.train, index)
    assert np.array_equal(cluster, nearest(index, exp.states.x[parts.train])[0]) and len(distance) == len(cluster)
    assert exp.states.mapped > 0
    exp.states.taken.clear()
    train_policy(exp, parts.train, parts.validation, np.zeros(len(parts.validation)), s)
    assert exp.states.taken == [300, min(300, len(parts.validation))]


def test_states_are_mapped_in_the_same_blocks_however_they_are_held():
    """A matrix product rounds by how many rows it is given, so a function mapped over a night's states is
    given the same blocks of rows whether they are held whole (the local engine) or in ranges (the Ray
    engine's tasks, `first` their first row): the same figures, to the bit."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 48)).astype(np.float32)
    w = rng.standard_normal((48, 256)).astype(np.float32)
    rows = rng.permutation(1000)[:700]
    block = 37
    whole = States(x, block).map(lambda part: (part @ w,), rows)[0]
    span = 4 * block
    held = np.empty_like(whole)
    for first in range(0, 1000, span):
        here = np.flatnonzero((rows >= first) & (rows < first + span))
        held[here] = apply(x[first:first + span], rows[here] - first, lambda part: (part @ w,), (), block, first)[0]
    assert np.array_equal(held, whole)
    assert np.array_equal(States(x, block).map(lambda part: (part @ w,), rows[:0])[0], np.zeros((0, 256), np.float32))
    assert np.array_equal(draw(10, 20, 0), np.arange(10))
    drawn = draw(1000, 100, 0)
    assert len(set(drawn)) == 100 and np.all(np.diff(drawn) > 0) and np.array_equal(drawn, draw(1000, 100, 0))


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


def test_where_system2_is_indifferent_system1_answers_with_either_good_action(tmp_path):
    """Half the situations have two equally good actions, and System 2 takes whichever it happened to score
    higher. Judged by System 2's own scores (`score_tolerance`), System 1 answers there and is right; judged
    by exact agreement alone (tolerance 0) it would stay silent there."""
    from dmn.home import Home

    def consolidated(tolerance: float):
        home = Home.resolve(tmp_path / f"t{tolerance}")
        truth = write_logs(home, situations=12, dim=64, episodes=60, steps=20, accuracy=1.0, ties=0.5,
                           score_noise=0.05)
        done = night(home, ConsolidateSettings(policy_hidden=64, policy_epochs=15, score_tolerance=tolerance))[0]
        return home, truth, done

    home, truth, done = consolidated(0.25)
    assert done.status == "published" and done.metrics["combined"]["precision"] >= 0.97
    states, which = truth.situations(4000)
    tied = truth.second[which] >= 0
    assert 0.3 < tied.mean() < 0.7
    answers = load(home, "synthetic").answer(states)
    answered = ~np.isnan(answers.confidence)
    good = (answers.action == truth.best[which]) | (answers.action == truth.second[which])
    assert answered[tied].mean() >= 0.9 and good[tied & answered].mean() >= 0.97
    assert answered[~tied].mean() >= 0.9 and good[~tied & answered].mean() >= 0.97
    assert done.metrics["combined"]["exact_precision"] < 0.9  # in the tied situations, often not System 2's very choice

    exact_home, _, exact = consolidated(0.0)
    silent = load(exact_home, "synthetic").answer(states) if exact.status == "published" else None
    assert silent is None or (~np.isnan(silent.confidence[tied])).mean() <= 0.5


def test_a_precise_new_bundle_replaces_one_below_target_live_whatever_its_coverage():
    """The serving bundle's coverage is the standard only while its live precision meets the target: below
    it, even by less than chance (not yet `failing`), a new bundle that meets the target on test replaces it."""
    from dmn.sleep.night import _gate, _replaces

    published = {"version": "v000001", "coverage": 0.9, "precision": 0.99, "failing": False,
                 "live": {"audited": 250, "precision": 0.96}}
    night = SimpleNamespace(metrics={"combined": {"precision": 0.97, "coverage": 0.8}, "published": published})
    assert "worse than the published v000001's 0.900" in _gate(night, ConsolidateSettings())
    published["live"]["precision"] = 0.94
    assert _gate(night, ConsolidateSettings()) == ""
    assert _replaces(night, ConsolidateSettings()) == ("replaces v000001, which fell short live: precision 0.940 on "
                                                       "250 audits, below the target 0.95")
    published["failing"] = True
    assert _replaces(night, ConsolidateSettings()).startswith("replaces v000001, which failed live")
    night.metrics["combined"]["precision"] = 0.93
    assert "below the target" in _gate(night, ConsolidateSettings())


def test_a_bundle_that_is_wrong_live_does_not_keep_serving(tmp_path):
    """The world changes under a published bundle: System 2 now prefers other actions in some situations.
    The live audits say System 1 is failing there. The new night's bundle is judged on those same steps;
    whatever the gate says of it, the failing bundle stops answering where it failed."""
    from dmn.home import Home

    home = Home.resolve(tmp_path / "home")
    write_logs(home, situations=6, dim=32, episodes=60, steps=20, accuracy=1.0)
    first = night(home, FAST)[0]
    assert first.status == "published"
    bundle = load(home, "synthetic")
    truth = write_logs(home, situations=6, dim=32, episodes=1, steps=1, accuracy=1.0)  # the same world
    changed = [0, 1, 2]  # situations where System 2 now prefers another action than the bundle learned
    states, which = truth.situations(600, seed=5)
    answers = bundle.answer(states)
    with EpisodeLogger(home, world="synthetic", encoder="synthetic@1") as log:
        for e in range(30):
            log.episode()
            for step in range(20):
                i = e * 20 + step
                if np.isnan(answers.confidence[i]):
                    continue
                s = which[i]
                best = (truth.best[s] + 1) % 3 if s in changed else truth.best[s]
                if best == truth.vetoed[s]:
                    best = (best + 1) % 3
                withheld = int(bundle.actions[answers.action[i]])
                log.decision(step, states[i], int(best), source="system2", reflex=withheld)
                for a in range(3):
                    log.simulation(step, states[i], a, float(a == best), vetoed=a == truth.vetoed[s] and a != best)
            log.end()
    later = night(home, ConsolidateSettings(policy_hidden=64, policy_epochs=15, coverage_tolerance=0.0,
                                            precision_target=0.999))[0]  # the gate refuses any challenger
    assert later.metrics["published"]["failing"] and later.status == "demoted", later.reason
    served = load(home, "synthetic")
    assert served.version == later.version != first.version and served.manifest["demoted_from"] == first.version
    again = served.answer(states)
    answered_changed = ~np.isnan(again.confidence) & np.isin(which, changed)
    assert answered_changed.mean() < 0.1 * np.isin(which, changed).mean()  # silent where it failed
    assert (~np.isnan(again.confidence) & ~np.isin(which, changed)).sum() > 0.5 * (~np.isin(which, changed)).sum()
    # `dmn diff` names the situations demoted, and nothing else changed: the same centroids, a column flipped.
    change = compare(home, "synthetic").situations.to_pylist()
    audited = ~np.isnan(answers.confidence) & np.isin(which, changed)
    assert {r["situation"] for r in change if r["change"] == "demoted"} == set(answers.situation[audited].tolist())
    assert {r["change"] for r in change} == {"demoted", "same"} and all(r["distance"] == 0 for r in change)


def test_thresholds_ask_each_answer_to_be_likely_right_until_system1_is_seen_live():
    """Until validation holds audits, the policy answers only where its own calibrated chance reaches the
    target; the average may then carry less sure answers, but none below `min_confidence`, even where the
    average could carry them. A state it cannot answer (NaN) is never counted."""
    from dmn.bundle.decide import Answers
    from dmn.sleep.evaluate import thresholds

    n = 440
    confidence = np.r_[np.full(300, 0.999), np.full(60, 0.9), np.full(40, 0.6), np.full(40, np.nan)]
    right = np.r_[np.ones(300, bool), np.arange(60) % 20 != 0, np.arange(40) % 4 != 0,  # 95% and 75% right
                  np.zeros(40, bool)]
    policy = Answers(np.zeros(n, np.int64), confidence, np.where(np.isnan(confidence), "", "policy"), np.zeros(n))
    table = Answers(np.zeros(n, np.int64), np.full(n, np.nan), np.full(n, ""), np.zeros(n))
    rows = np.arange(n)

    def steps(audited: bool):  # what thresholds reads of an Experience
        return SimpleNamespace(represents=np.ones(n), reflex=np.where(rows < audited, 0, -1),
                               right=lambda actions, at: right[at])

    assert thresholds(table, policy, steps(False), rows, 0.95, 1.0, 0.8) == (np.inf, 0.999)
    assert thresholds(table, policy, steps(True), rows, 0.95, 1.0, 0.8) == (np.inf, 0.9)
    assert thresholds(table, policy, steps(True), rows, 0.95, 1.0, 0.5) == (np.inf, 0.6)  # 387 of 400 right


def test_the_table_answers_with_system2s_usual_choice_not_the_action_always_acceptable():
    """Action 0 is acceptable at every step, and never best where System 2 chose 2 (three steps in four).
    The table answers 2, how often it was acceptable its agreement (its confidence then decides whether it
    answers at all); by "most often acceptable" alone, 0 would answer here, right every time and never System
    2's choice, and repeated at every step such a hedge costs the agent what no single step shows."""
    from dmn.sleep.table import _label_choice

    n = 20
    gap = np.tile([0.2, np.inf, 0.0], (n, 1))  # stakes below System 2's best: 0 acceptable, 1 vetoed
    gap[::4] = [0.0, np.inf, 0.3]  # a quarter of the time System 2 chose 0, and 2 was not acceptable
    exp = SimpleNamespace(actions=["0", "1", "2"], weight=np.ones(n), label=gap.argmin(1), gap=gap,
                          acceptable=gap <= 0.25)
    best, agreement, beside = _label_choice(exp, np.arange(n), np.zeros(n, np.int64), np.array([n]), 0.5)
    assert best.to_pylist() == ["2"] and agreement.tolist() == [0.75] and beside["exact_agreement"].tolist() == [0.75]
    exp.gap[::4] = [0.0, np.inf, 0.1]  # now 2 is always acceptable too
    exp.acceptable = exp.gap <= 0.25
    best, agreement, beside = _label_choice(exp, np.arange(n), np.zeros(n, np.int64), np.array([n]), 0.5)
    assert best.to_pylist() == ["2"] and agreement.tolist() == [1.0]


def test_run_records_of_past_weeks_move_into_their_months_file_and_are_read_once(tmp_path):
    """Records older than `RUNS_ARCHIVED_AFTER_DAYS` leave their own files for their month's; one a crash left in
    both counts once; the night still finds its last run (nothing new), and SQL and status read them all."""
    from datetime import datetime, timedelta, timezone

    from dmn.home import Home
    from dmn.ops.status import status
    from dmn.sleep.night import RUNS_ARCHIVED_AFTER_DAYS, run_files

    home = Home.resolve(tmp_path / "home")
    write_logs(home, situations=4, dim=16, episodes=10, steps=10)
    assert night(home, FAST)[0].status != "failed"
    (first,) = run_files(home)[0]
    record = json.loads(first.read_bytes())
    now = datetime.now(timezone.utc)
    for days in (40, 39, RUNS_ARCHIVED_AFTER_DAYS + 1, 2):
        started = (now - timedelta(days=days)).isoformat()
        old = {**record, "run_id": f"old{days:09d}", "started_at": started, "ended_at": started}
        (home.runs / f"{started[:19].replace(':', '')}-{old['run_id']}.json").write_text(json.dumps(old))
        if days == 40:  # a crash cut its move: it is in its month's file too
            month = started[:7]
            (home.runs / f"{month}.jsonl").write_text(json.dumps(old) + "\n")
    assert consolidate(home, settings=FAST)[0].status == "nothing new"
    recent, months = run_files(home)
    assert len(recent) == 3 and {p.name[:7] for p in months} >= {month}  # two days old, the first, and this run
    assert sum(len(p.read_text().splitlines()) for p in months) == 3
    ids = store(home).sql("SELECT run_id FROM consolidations ORDER BY started_at").fetchall()
    assert len(ids) == 6 == len(set(ids)) and ids[0] == ("old000000040",)
    assert status(home)["worlds"]["synthetic"]["last_night"]["status"] == "nothing new"
