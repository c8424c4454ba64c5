"""Ingest: exactly once, every good record lands, every bad one is quarantined with a reason."""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import time

import numpy as np
import pytest

from conftest import count, decision, dmn, episode, run, simulation, write_jsonl
from dmn.errors import Busy, DmnError
from dmn.lake.store import Store


def test_records_land_with_world_encoder_and_provenance(home):
    write_jsonl(home.inbox / "a.jsonl", [episode(), simulation(), decision(), {"type": "outcome", "episode_id": "e1", "step": 0, "reward": 1.5},
                                         {"type": "episode_end", "episode_id": "e1", "return": 1.5, "success": True}])
    report = run(home)
    assert report.records == {"episode": 1, "simulation": 1, "decision": 1, "outcome": 1, "episode_end": 1}
    assert report.quarantined == {}
    row = Store(home).sql("SELECT world, encoder, source_file, source_line, batch FROM simulations").fetchone()
    assert row == ("w", "enc", "inbox/a.jsonl", 2, report.batch)
    assert Store(home).sql('SELECT "return", success FROM episodes').fetchone() == (1.5, True)


def test_vectors_round_trip_exactly(home):
    rng = np.random.default_rng(7)
    z64 = rng.standard_normal(16)
    z32 = z64.astype(np.float32)
    t16 = z64.astype("<f2")
    tensor = lambda a, dt: {"__type__": "Tensor", "shape": [len(a)], "dtype": dt, "b64": base64.b64encode(a.tobytes()).decode()}
    write_jsonl(home.inbox / "v.jsonl", [
        episode(world="w", encoder="e"),
        simulation(step=0, dim=16, state=[float(x) for x in z32], predicted=tensor(z32, "float32")),
        simulation(step=1, dim=16, state=tensor(z64.astype("<f8"), "float64"), predicted=tensor(t16, "float16")),
    ])
    run(home)
    rows = Store(home).sql("SELECT step, state, predicted FROM simulations ORDER BY step").fetchall()
    assert np.array_equal(np.array(rows[0][1], np.float32), z32)
    assert np.array_equal(np.array(rows[0][2], np.float32), z32)
    assert np.array_equal(np.array(rows[1][1], np.float32), z64.astype(np.float32))
    assert np.array_equal(np.array(rows[1][2], np.float32), t16.astype(np.float32))


def test_rerun_and_copy_add_nothing(home, tmp_path):
    path = write_jsonl(home.inbox / "a.jsonl", [episode(), simulation(), decision()])
    first = run(home)
    assert sum(first.records.values()) == 3
    again = run(home)
    assert again.batch is None and again.records == {} and again.skipped == {"already ingested (unchanged)": 1}
    shutil.copy(path, home.inbox / "copy.jsonl")
    copy = run(home)
    assert copy.batch is None and copy.skipped["copy of an ingested file"] == 1
    assert count(home, "simulations") == 1 and count(home, "decisions") == 1


def test_appended_file_contributes_only_new_complete_lines(home):
    path = write_jsonl(home.inbox / "grow.jsonl", [episode(), simulation(step=0)])
    run(home)
    with open(path, "ab") as f:
        f.write((json.dumps(simulation(step=1)) + "\n").encode())
        f.write(json.dumps(simulation(step=2)).encode()[:25])  # a writer is mid-line
    report = run(home)
    assert report.records == {"simulation": 1} and report.pending_bytes == 25
    with open(path, "ab") as f:
        f.write(json.dumps(simulation(step=2)).encode()[25:] + b"\n")
    report = run(home)
    assert report.records == {"simulation": 1}
    assert Store(home).sql("SELECT list(step ORDER BY step) FROM simulations").fetchone()[0] == [0, 1, 2]
    assert Store(home).sql("SELECT max(source_line) FROM simulations").fetchone()[0] == 4


def test_rewritten_file_is_read_as_new(home):
    path = write_jsonl(home.inbox / "rot.jsonl", [episode(), simulation(step=0)])
    run(home)
    write_jsonl(path, [episode("e2"), simulation("e2", step=0), simulation("e2", step=1)])
    report = run(home)
    assert report.records == {"episode": 1, "simulation": 2}


def test_last_line_without_newline_is_a_record(home):
    path = home.inbox / "noeol.jsonl"
    path.write_text(json.dumps(episode()) + "\n" + json.dumps(simulation()))
    assert run(home).records == {"episode": 1, "simulation": 1}
    assert run(home).batch is None


def test_truncated_last_line_waits_then_is_quarantined(home):
    path = home.inbox / "cut.jsonl"
    path.write_text(json.dumps(episode()) + "\n" + json.dumps(simulation())[:30])
    report = run(home)
    assert report.records == {"episode": 1} and report.pending_bytes == 30
    old = time.time() - 7200
    os.utime(path, (old, old))
    report = run(home)
    assert report.quarantined == {"truncated last line (the file ends in the middle of a record)": 1}
    assert run(home).batch is None


BAD = [
    # (line, reason) -- each line follows a valid episode record for e1 (dimension 4)
    (b"{not json", "not valid JSON"),
    (b'{"type": "simulation", "episode_id": "e1"', "not valid JSON"),
    (b"[1, 2, 3]", "not a JSON object"),
    (b'"just a string"', "not a JSON object"),
    (b"\xff\xfe{}", "not valid UTF-8"),
    ({"episode_id": "e1", "step": 0}, "missing field"),
    ({"type": "dream", "episode_id": "e1"}, "unknown record type"),
    ({"type": 7, "episode_id": "e1"}, "unknown record type"),
    ({"type": "simulation", "step": 0, "state": [1, 2, 3, 4], "action": 1, "score": 1}, "missing field"),
    ({"type": "simulation", "episode_id": "e1", "step": 0, "state": [1, 2, 3, 4], "action": 1}, "missing field"),
    ({"type": "decision", "episode_id": "e1", "step": 0, "state": [1, 2, 3, 4], "action": 1}, "missing field"),
    (simulation(step="3"), "wrong field type"),
    (simulation(step=1.5), "wrong field type"),
    (simulation(step=-1), "wrong field type"),
    (simulation(score="high"), "wrong field type"),
    (simulation(action=[1]), "wrong action kind"),  # a vector, in a world of labels
    (simulation(action=[0.5, float("nan")]), "NaN or Inf"),
    (simulation(action={"__type__": "Tensor", "shape": [2], "dtype": "float32"}), "latent lost"),
    (simulation(action=1.5), "wrong field type"),
    (simulation(vetoed="yes"), "wrong field type"),
    (simulation(state="0.1,0.2"), "wrong field type"),
    (simulation(state=[1, "a", 3, 4]), "wrong field type"),
    (simulation(state=[]), "empty vector"),
    (simulation(state=[1, 2, 3]), "wrong vector length"),
    (simulation(predicted=[1, 2, 3, 4, 5]), "wrong vector length"),
    (b'{"type": "simulation", "episode_id": "e1", "step": 0, "state": [1, NaN, 3, 4], "action": 1, "score": 1}', "NaN or Inf"),
    (b'{"type": "simulation", "episode_id": "e1", "step": 0, "state": [1, 2, 3, 4], "action": 1, "score": Infinity}', "NaN or Inf"),
    (simulation(state=[1e39, 0, 0, 0]), "wrong field type"),  # beyond float32
    (simulation(state={"__type__": "Tensor", "shape": [4], "dtype": "float32"}), "latent lost"),
    (simulation(state={"__type__": "Tensor", "shape": [4], "dtype": "float32", "b64": "@@not base64@@"}), "bad tensor"),
    (simulation(state={"__type__": "Tensor", "shape": [4], "dtype": "int8", "b64": "AAAAAA=="}), "bad tensor"),
    (simulation(state={"__type__": "Tensor", "shape": [4], "dtype": "float32", "b64": "AAAAAAA="}), "bad tensor"),
    (simulation(state={"__type__": "Tensor", "shape": [3], "dtype": "float32", "b64": base64.b64encode(bytes(16)).decode()}), "bad tensor"),
    (decision(source="system3"), "wrong field type"),
    (decision(confidence=1.5), "out of range"),
    (decision(latency_ms=-3), "out of range"),
    (decision(ts="2026-01-01T00:00:00"), "wrong field type"),
    (decision(ts="yesterday"), "wrong field type"),
    (decision(ts="2999-01-01T00:00:00Z"), "timestamp in the future"),
    (decision(eid="ghost"), "episode never started"),
    (episode(world=""), "bad world name"),
    (episode(world=".."), "bad world name"),
    (episode(world="w"), "duplicate"),
    (episode(world="other"), "conflicting episode"),
    (episode(eid=""), "wrong field type"),
]


@pytest.mark.parametrize("line,reason", BAD, ids=[f"{i}-{r}" for i, (_, r) in enumerate(BAD)])
def test_each_bad_record_is_quarantined_and_good_ones_land(home, line, reason):
    write_jsonl(home.inbox / "bad.jsonl", [episode(), simulation(step=0), line, decision(step=0)])
    report = run(home)
    assert report.records.get("simulation") == 1 and report.records.get("decision") == 1
    if reason == "duplicate":
        assert report.duplicates == 1 and report.quarantined == {}
        return
    assert report.quarantined == {reason: 1}
    row = Store(home).sql("SELECT source_file, source_line, reason, hint, raw FROM quarantine").fetchone()
    assert row[:3] == ("inbox/bad.jsonl", 3, reason)
    assert row[3]  # every quarantined record says why in words
    assert row[4]  # and keeps the record itself


def test_lost_latent_hint_names_the_fix(home):
    write_jsonl(home.inbox / "a.jsonl", [episode(), simulation(state={"__type__": "Tensor", "shape": [4]})])
    run(home)
    hint = Store(home).sql("SELECT hint FROM quarantine").fetchone()[0]
    assert "TensorSafeEncoder" in hint and "EpisodeLogger" in hint


def test_dimension_is_fixed_by_first_batch_and_by_settings(home):
    write_jsonl(home.inbox / "a.jsonl", [episode(), simulation(dim=4)])
    run(home)
    write_jsonl(home.inbox / "b.jsonl", [episode("e2"), simulation("e2", dim=6), simulation("e2", step=1, dim=4)])
    report = run(home)
    assert report.records == {"episode": 1, "simulation": 1} and report.quarantined == {"wrong vector length": 1}
    (home.root / "dmn.toml").write_text('[dims]\n"w2" = 3\n')
    write_jsonl(home.inbox / "c.jsonl", [episode("e3", world="w2"), simulation("e3", dim=4), simulation("e3", dim=4, step=1)])
    assert run(home).quarantined == {"wrong vector length": 2}


def test_encoders_keep_separate_dimensions(home):
    write_jsonl(home.inbox / "a.jsonl", [episode("a", encoder="v1"), simulation("a", dim=4),
                                         episode("b", encoder="v2"), simulation("b", dim=8)])
    assert run(home).records == {"episode": 2, "simulation": 2}


def test_duplicate_decisions_are_dropped_once(home):
    write_jsonl(home.inbox / "a.jsonl", [episode(), decision(step=0), decision(step=0)])
    write_jsonl(home.inbox / "b.jsonl", [decision(step=0), decision(step=1)])
    report = run(home)
    assert report.records == {"episode": 1, "decision": 2} and report.duplicates == 2


def test_episode_started_in_an_earlier_batch_is_known(home):
    write_jsonl(home.inbox / "a.jsonl", [episode()])
    run(home)
    write_jsonl(home.inbox / "b.jsonl", [simulation(step=3)])
    assert run(home).records == {"simulation": 1}
    assert Store(home).sql("SELECT world FROM simulations").fetchone()[0] == "w"


def test_gzip_good_and_corrupt(home):
    lines = "".join(json.dumps(r) + "\n" for r in [episode(), simulation(step=0), simulation(step=1), decision()])
    (home.inbox / "good.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    packed = gzip.compress(("".join(json.dumps(simulation("e9", step=i)) + "\n" for i in range(2000))).encode())
    write_jsonl(home.inbox / "e9.jsonl", [episode("e9")])
    (home.inbox / "bad.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    report = run(home)
    assert report.records["decision"] == 1
    assert report.quarantined == {"corrupt gzip file": 1}
    assert count(home, "simulations", "episode_id = 'e1'") == 2
    assert 0 < count(home, "simulations", "episode_id = 'e9'") < 2000  # what decompressed before the damage
    assert run(home).batch is None


def test_line_over_the_limit_is_quarantined_unread(home):
    (home.root / "dmn.toml").write_text("[ingest]\nmax_line_bytes = 1000\nchunk_bytes = 256\n")
    huge = simulation(state=[0.123456789] * 4, meta="x" * 5000)
    write_jsonl(home.inbox / "a.jsonl", [episode(), huge, simulation(step=1)])
    report = run(home)
    assert report.records == {"episode": 1, "simulation": 1}
    assert report.quarantined == {"line too long": 1}
    row = Store(home).sql("SELECT source_line, raw_bytes FROM quarantine").fetchone()
    assert row[0] == 2 and row[1] > 1000


def test_skipped_files_say_why(home, tmp_path):
    (home.inbox / "empty.jsonl").write_bytes(b"")
    (home.inbox / ".hidden.jsonl").write_text("{}\n")
    (home.inbox / "w.jsonl.tmp").write_text("{}\n")
    (home.inbox / "notes.txt").write_text("hello\n")
    outside = write_jsonl(tmp_path / "elsewhere.jsonl", [episode()])
    (home.inbox / "link.jsonl").symlink_to(outside)
    report = run(home)
    assert report.batch is None
    assert report.skipped == {"empty file": 1, "temporary file (still being written)": 2, "unsupported file type": 1,
                              "symbolic link (not followed; copy the file instead)": 1}


def test_missing_path_is_a_clear_error(home, tmp_path):
    with pytest.raises(DmnError, match="no such file"):
        run(home, tmp_path / "nope.jsonl")


def test_second_ingest_on_one_home_is_refused(home):
    with home.lock("ingest"):
        with pytest.raises(Busy, match="another dmn process"):
            run(home)


def test_lake_parquet_moves_between_homes(home, tmp_path):
    write_jsonl(home.inbox / "a.jsonl", [episode(meta={"k": [1, 2]}), simulation(dim=4), decision(dim=4)])
    run(home)
    other = type(home).resolve(tmp_path / "other")
    files = sorted(Store(home).files("episode_starts") + Store(home).files("simulations") + Store(home).files("decisions"))
    for i, f in enumerate(files):
        shutil.copy(f, other.inbox / f"part{i}.parquet")
    report = run(other)
    assert report.records == {"episode": 1, "simulation": 1, "decision": 1}
    a = Store(home).sql("SELECT state, action, score FROM simulations").fetchone()
    b = Store(other).sql("SELECT state, action, score FROM simulations").fetchone()
    assert a == b
    assert Store(other).sql("SELECT meta FROM episodes").fetchone()[0] == Store(home).sql("SELECT meta FROM episodes").fetchone()[0]


def test_foreign_parquet_is_quarantined(home):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1, 2]}), home.inbox / "foreign.parquet")
    assert run(home).quarantined == {"not a dmn lake file": 1}


def test_crash_before_commit_leaves_nothing(home, monkeypatch):
    write_jsonl(home.inbox / "a.jsonl", [episode(), simulation()])
    monkeypatch.setattr(Store, "commit", lambda self, manifest: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run(home)
    monkeypatch.undo()
    assert count(home, "simulations") == 0
    report = run(home)
    assert report.recovered and report.records == {"episode": 1, "simulation": 1}
    assert not any(home.tmp.glob("b*"))


def test_crash_after_commit_is_rolled_forward(home, monkeypatch):
    write_jsonl(home.inbox / "a.jsonl", [episode(), simulation()])
    monkeypatch.setattr(Store, "_roll_forward", lambda self, batch: None)
    run(home)
    monkeypatch.undo()
    assert count(home, "simulations") == 1  # readers find committed files still in staging
    report = run(home)
    assert report.recovered[0].startswith("rolled forward") and report.batch is None
    assert count(home, "simulations") == 1 and any(home.lake.rglob("*.parquet"))


def test_conflicting_repeats_are_quarantined_not_dropped(home):
    write_jsonl(home.inbox / "a.jsonl", [episode(), decision(step=0), decision(step=0, action=2),
                                         {"type": "episode_end", "episode_id": "e1", "return": 1.0}])
    report = run(home)
    assert report.records == {"episode": 1, "decision": 1, "episode_end": 1}
    assert report.quarantined == {"conflicting record": 1}
    write_jsonl(home.inbox / "b.jsonl", [decision(step=0), decision(step=0, action=3),
                                         {"type": "episode_end", "episode_id": "e1", "return": 2.0}])
    report = run(home)
    assert report.duplicates == 1 and report.quarantined == {"conflicting record": 2}
    hint = Store(home).sql("SELECT hint FROM quarantine WHERE type = 'episode_end'").fetchone()[0]
    assert hint == "episode_end with the same episode_id as in the store, but other values"


def test_unwritable_store_is_a_clear_error_and_loses_nothing(home, monkeypatch):
    import pyarrow.parquet as pq

    write_jsonl(home.inbox / "a.jsonl", [episode(), simulation()])

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "ParquetWriter", disk_full)
    with pytest.raises(DmnError, match="nothing was committed: No space left on device"):
        run(home)
    monkeypatch.undo()
    assert count(home, "simulations") == 0
    assert run(home).records == {"episode": 1, "simulation": 1}


@pytest.mark.parametrize("content,reason", [(b"{not json", "not valid JSON"), (b'{"run_id": "x"}', "not a Lár audit file")])
def test_broken_lar_files_are_quarantined_whole(home, content, reason):
    (home.inbox / "run_x.json").write_bytes(content)
    report = run(home)
    assert report.quarantined == {reason: 1}
    assert Store(home).sql("SELECT raw FROM quarantine").fetchone()[0] == content.decode()


def test_the_same_lines_twice_in_one_run_land_once(home, tmp_path):
    path = write_jsonl(home.inbox / "a.jsonl", [episode(), simulation(step=0), simulation(step=1), decision()])
    shutil.copy(path, home.inbox / "b.jsonl")
    report = run(home, path, path, home.inbox)
    assert report.records == {"episode": 1, "simulation": 2, "decision": 1}
    assert report.skipped == {"copy of an ingested file": 1}


def test_a_gzip_of_ingested_lines_adds_only_what_is_new(home):
    lines = [episode(), simulation(step=0), simulation(step=1)]
    path = write_jsonl(home.inbox / "a.jsonl", lines)
    run(home)
    (home.inbox / "a.jsonl.gz").write_bytes(gzip.compress(path.read_bytes() + (json.dumps(simulation(step=2)) + "\n").encode()))
    report = run(home)
    assert report.records == {"simulation": 1} and report.duplicates == 3
    assert count(home, "simulations") == 3


def test_fields_of_other_record_types_are_ignored(home):
    write_jsonl(home.inbox / "a.jsonl", [
        episode(step=-1, confidence=3),
        {"type": "outcome", "episode_id": "e1", "step": 0, "ts": "2099-01-01T00:00:00Z", "world": "elsewhere"},
        decision(eid="ghost", world="w2"),
    ])
    report = run(home)
    assert report.records == {"episode": 1, "outcome": 1}
    assert report.quarantined == {"episode never started": 1}
    assert Store(home).sql("SELECT world FROM outcomes").fetchone() == ("w",)


def test_world_names_that_would_not_fit_a_folder_name_are_refused(home):
    write_jsonl(home.inbox / "a.jsonl", [episode(world="é" * 200), episode("e2", world="ALE/Pong-v5")])
    report = run(home)
    assert report.quarantined == {"bad world name": 1} and report.records == {"episode": 1}


def test_an_unfinished_tail_commits_nothing_until_it_is_finished(home):
    path = home.inbox / "a.jsonl"
    path.write_text(json.dumps(episode()) + "\n" + json.dumps(simulation())[:20])
    assert run(home).batch is not None
    for _ in range(2):
        again = run(home)
        assert again.batch is None and again.pending_bytes == 20
    assert len(list(home.catalog.glob("*.json"))) == 1


def test_blank_lines_of_any_length_are_skipped(home):
    write_jsonl(home.inbox / "a.jsonl", [episode(), " " * 40, "\t", "", simulation()])
    assert run(home).records == {"episode": 1, "simulation": 1}


def test_an_unreadable_file_is_skipped_and_the_rest_lands(home, monkeypatch):
    write_jsonl(home.inbox / "a.jsonl", [episode()])
    secret = write_jsonl(home.inbox / "b.jsonl", [episode("e2")])
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: real(p, mode) and str(p) != str(secret))
    report = run(home)
    assert report.records == {"episode": 1} and report.skipped == {"unreadable file (permission denied)": 1}


def test_lar_steps_without_an_integer_index_still_ingest(home):
    doc = {"run_id": "r1", "steps": [{"step": "a", "state_before": {},
                                      "state_diff": {"added": {"action_taken": 1, "latent": [1.0, 2.0]}}}]}
    (home.inbox / "run_r1.json").write_text(json.dumps(doc))
    assert run(home).records == {"episode": 1, "decision": 1, "episode_end": 1}


def test_a_large_partition_is_written_as_two_files_with_every_row(home):
    lines = [episode()] + [simulation(step=s, dim=2, state=[float(s), 1.0]) for s in range(12_000)]
    write_jsonl(home.inbox / "big.jsonl", lines)
    assert run(home).records == {"episode": 1, "simulation": 12_000}
    assert len(Store(home).files("simulations")) == 2
    assert Store(home).sql("SELECT count(DISTINCT step), sum(state[1]) FROM simulations").fetchone() == (12_000, sum(range(12_000)))


def test_a_byte_order_mark_is_not_a_bad_record(home):
    path = write_jsonl(home.inbox / "bom.jsonl", [episode(), simulation()])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert run(home).records == {"episode": 1, "simulation": 1}
    assert run(home).batch is None


def test_an_unfinished_over_long_last_line_waits_like_any_unfinished_line(home):
    (home.root / "dmn.toml").write_text("[ingest]\nmax_line_bytes = 1000\n")
    path = home.inbox / "a.jsonl"
    path.write_bytes((json.dumps(episode()) + "\n").encode() + b'{"type": "simulation", "x": "' + b"y" * 3000)
    report = run(home)
    assert report.records == {"episode": 1} and report.quarantined == {} and report.pending_bytes > 3000
    with open(path, "ab") as f:
        f.write(b'"}\n' + (json.dumps(simulation()) + "\n").encode())
    report = run(home)
    assert report.records == {"simulation": 1} and report.quarantined == {"line too long": 1}
    assert Store(home).sql("SELECT source_line FROM simulations").fetchone() == (3,)
    old = time.time() - 7200
    path.write_bytes(path.read_bytes() + b'{"unfinished": "' + b"z" * 3000)
    os.utime(path, (old, old))
    assert run(home).quarantined == {"line too long": 1}


def test_identical_simulations_in_one_log_are_all_kept_but_resent_ones_are_not(home):
    same = simulation(step=0)  # a planner that evaluates the same action twice, identically
    path = write_jsonl(home.inbox / "a.jsonl", [episode(), same, same, simulation(step=1)])
    assert run(home).records == {"episode": 1, "simulation": 3}
    (home.inbox / "a.jsonl.gz").write_bytes(gzip.compress(path.read_bytes()))
    write_jsonl(home.inbox / "b.jsonl", [same, same, same, simulation(step=2)])
    report = run(home)
    assert report.records == {"simulation": 2} and report.duplicates == 6
    assert count(home, "simulations", "step = 0") == 3


def test_lar_runs_with_repeated_or_negative_step_numbers_keep_every_record(home):
    steps = [{"step": 3, "state_before": {}, "state_diff": {"added": {"score": 1.0, "candidate_action": 0, "latent": [1.0, 2.0]}}},
             {"step": 3, "state_before": {}, "state_diff": {"added": {"score": 1.0, "candidate_action": 0, "latent": [1.0, 2.0]}}},
             {"step": -7, "state_before": {}, "state_diff": {"added": {"action_taken": 0, "latent": [1.0, 2.0]}}}]
    (home.inbox / "run_r2.json").write_text(json.dumps({"run_id": "r2", "steps": steps}))
    assert run(home).records == {"episode": 1, "simulation": 2, "decision": 1, "episode_end": 1}


def test_quarantine_lands_whatever_the_machine_time_zone(home):
    write_jsonl(home.inbox / "a.jsonl", ["not json", {"type": "episode"}])
    env = {**os.environ, "TZ": "Pacific/Kiritimati"}  # UTC+14: its date is ahead of UTC's much of the day
    done = dmn("ingest", home=home, env=env)
    assert done.returncode == 0, done.stderr
    assert count(home, "quarantine") == 2


def test_reading_goes_on_after_an_over_long_line_that_ends_a_read_block(home):
    (home.root / "dmn.toml").write_text("[ingest]\nmax_line_bytes = 1000\n")
    first = (json.dumps(episode()) + "\n").encode()
    long_line = b'{"x": "' + b"y" * (2 * 65536 - len(first) - 10) + b'"}\n'
    assert len(first) + len(long_line) == 2 * 65536  # gzip is read 64 KiB at a time
    rest = "".join(json.dumps(simulation(step=s)) + "\n" for s in range(50)).encode()
    (home.inbox / "a.jsonl.gz").write_bytes(gzip.compress(first + long_line + rest))
    report = run(home)
    assert report.records == {"episode": 1, "simulation": 50} and report.quarantined == {"line too long": 1}


def test_vectors_on_records_that_have_none_are_ignored(home):
    write_jsonl(home.inbox / "a.jsonl", [episode(), decision(dim=4),
                                         {"type": "outcome", "episode_id": "e1", "step": 0, "state": [0.5, 0.6]},
                                         {"type": "episode_end", "episode_id": "e1", "predicted": [1, "a"]}])
    assert run(home).records == {"episode": 1, "decision": 1, "outcome": 1, "episode_end": 1}


def test_a_gzip_with_a_byte_order_mark(home):
    data = b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in [episode(), simulation()]).encode()
    (home.inbox / "a.jsonl.gz").write_bytes(gzip.compress(data))
    assert run(home).records == {"episode": 1, "simulation": 1}


def test_a_file_name_that_is_not_utf8_is_skipped(home):
    write_jsonl(home.inbox / "good.jsonl", [episode()])
    write_jsonl(home.inbox / os.fsdecode(b"bad\xff.jsonl"), [episode("e2")])
    report = run(home)
    assert report.records == {"episode": 1} and report.skipped == {"file name is not valid UTF-8 (rename it)": 1}


@pytest.mark.parametrize("doc,reason", [
    (b"[" * 200_000, "not valid JSON"),
    (json.dumps({"run_id": "r", "steps": [{"state_diff": {"added": [1, 2]}}], "timestamp": "0001-01-01T00:00:00"}).encode(), None),
])
def test_odd_lar_files_never_stop_the_run(home, doc, reason):
    (home.inbox / "run_odd.json").write_bytes(doc)
    write_jsonl(home.inbox / "a.jsonl", [episode()])
    report = run(home)
    assert report.records["episode"] >= 1
    if reason:
        assert report.quarantined == {reason: 1}


def test_a_failed_ingest_leaves_no_reading_thread_behind(home, monkeypatch):
    """The thread that reads ahead stops with the run however it stops: a parse that fails mid-file must not
    leave it blocked on its full queue (a daemon would leak a thread and its buffers per failed night)."""
    import threading

    from dmn.lake import read
    from dmn.lake.parse import Parser

    write_jsonl(home.inbox / "a.jsonl", [episode()] + [simulation(step=s, dim=64) for s in range(5000)])
    monkeypatch.setattr(read, "READ_AHEAD", 4096)  # a block of lines per MiB read: many blocks to hand over
    calls = []

    def fail_on_the_second_block(self, file_index, lines):
        calls.append(lines.num_rows)
        if len(calls) == 2:
            raise RuntimeError("parse failed")

    monkeypatch.setattr(Parser, "add", fail_on_the_second_block)
    with pytest.raises(RuntimeError, match="parse failed"):
        run(home)
    deadline = time.monotonic() + 10
    while any(t.name == "dmn-ingest-read" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "dmn-ingest-read" for t in threading.enumerate())
    monkeypatch.undo()
    assert run(home).records == {"episode": 1, "simulation": 5000}  # and nothing was half-committed


def test_vector_actions_land_in_their_own_column_and_one_world_has_one_kind(home):
    """A continuous world's actions are vectors (arrays or tensor objects), stored as fixed-size float32 lists in
    `action_vector`; a label where vectors go, a vector of another length, or a reflex of another kind is
    quarantined with its reason, and the good records of the same file land."""
    z = [0.1, 0.2, 0.3, 0.4]
    arm = base64.b64encode(np.array([0.5, -0.5, 0.25], "<f4").tobytes()).decode()
    write_jsonl(home.inbox / "a.jsonl", [
        episode(world="arm"),
        decision(step=0, action=[0.5, -0.5, 0.25], state=z, reflex=[0.5, -0.5, 0.0]),
        simulation(step=0, action={"__type__": "Tensor", "shape": [3], "dtype": "float32", "b64": arm}, state=None),
        {"type": "simulation", "episode_id": "e1", "step": 0, "action": [0.4, -0.5, 0.25], "score": 0.7},  # no state
        decision(step=1, action=2, state=z),
        decision(step=2, action=[0.5, -0.5], state=z),
        decision(step=3, action=[0.5, -0.5, 0.25], state=z, reflex=1),
    ])
    report = run(home)
    assert report.records == {"episode": 1, "decision": 1, "simulation": 2}
    assert report.quarantined == {"wrong action kind": 2, "wrong action length": 1}
    store = Store(home)
    assert store.sql("SELECT action, action_vector, reflex_vector FROM decisions").fetchall() == [
        (None, [0.5, -0.5, 0.25], [0.5, -0.5, 0.0])]
    assert sorted(store.sql("SELECT action_vector, state IS NULL FROM simulations").fetchall()) == [
        ([0.4000000059604645, -0.5, 0.25], True), ([0.5, -0.5, 0.25], True)]
    import pyarrow.parquet as pq

    field = pq.read_table(store.files("decisions")[0]).schema.field("action_vector")
    assert str(field.type) == "fixed_size_list<element: float>[3]"
    write_jsonl(home.inbox / "b.jsonl", [episode("e2", world="arm"), decision("e2", 0, action=[1.0, 2.0], state=z)])
    assert run(home).quarantined == {"wrong action length": 1}  # fixed by the first batch


def test_the_settings_can_fix_a_worlds_action_kind_before_any_log(home):
    (home.root / "dmn.toml").write_text('[actions]\n"arm" = 2\n"cart" = "discrete"\n')
    write_jsonl(home.inbox / "a.jsonl", [episode("a", world="arm"), decision("a", 0, action=[1.0, 2.0, 3.0]),
                                         episode("b", world="cart"), decision("b", 0, action=[1.0])])
    assert run(home).quarantined == {"wrong action length": 1, "wrong action kind": 1}
    (home.root / "dmn.toml").write_text('[actions]\n"arm" = "continuous"\n')
    with pytest.raises(DmnError, match=r"\[actions\] 'arm' must be \"discrete\" or a positive integer"):
        run(home)


def test_retention_removes_only_what_the_lake_holds_whole(home):
    """An inbox file consumed whole leaves once `retention_days` have passed since that commit; one with an
    unterminated tail, one that grew since, and one still in its grace period stay; the lake keeps it all."""
    from dmn.ops.status import check, status

    whole = write_jsonl(home.inbox / "whole.jsonl", [episode("e1"), decision("e1", step=0)])
    tail = write_jsonl(home.inbox / "tail.jsonl", [episode("e2"), decision("e2", step=0)])
    with open(tail, "a") as f:
        f.write('{"type": "decision", "episode_id": "e2", "st')  # a writer still at it
    grown = write_jsonl(home.inbox / "grown.jsonl", [episode("e3"), decision("e3", step=0)])
    (home.root / "dmn.toml").write_text("[ingest]\nretention_days = 1\n")
    assert run(home).batch and run(home).retired == {}  # consumed, but within the grace period
    with open(grown, "a") as f:
        f.write(json.dumps(decision("e3", step=1)) + "\n")  # appended after the first batch read it
    (home.root / "dmn.toml").write_text("[ingest]\nretention_days = 0\n")
    size = whole.stat().st_size
    assert run(home).retired == {"files": 1, "bytes": size}
    assert not whole.exists() and tail.exists() and grown.exists()
    assert run(home).retired["files"] == 1 and not grown.exists() and tail.exists()  # its new line was consumed
    assert count(home, "decisions") == 4 and count(home, "episodes") == 3
    assert status(home)["inbox"]["retired"]["files"] == 2 and check(home)["problems"] == []
    (home.root / "dmn.toml").write_text('[ingest]\nretention_days = 0\ninbox_retention = "archive"\n')
    kept = write_jsonl(home.inbox / "day" / "kept.jsonl", [episode("e4")])
    run(home)
    assert run(home).retired["files"] == 1 and (home.root / "archive" / "day" / "kept.jsonl").exists()
    assert count(home, "episodes") == 4 and tail.exists() and not kept.exists()


def test_compaction_merges_small_batches_and_the_lake_reads_the_same(home):
    """A run of `compact_batches` small batches becomes one, row for row (each row keeps its batch); the ledger
    still knows every file (a re-run adds nothing, an appended file only its new lines), the night still finds
    nothing new, and the replaced files leave only once no night can be reading them."""
    from datetime import datetime, timedelta, timezone

    from dmn.lake import compact
    from dmn.ops.status import check
    from dmn.sleep.experience import pairs

    rows = "SELECT episode_id, step, action, state, batch, source_file FROM decisions ORDER BY ALL"
    (home.root / "dmn.toml").write_text("[ingest]\ncompact_batches = 3\n")
    logs = []
    for day in range(3):
        logs.append(write_jsonl(home.inbox / f"day{day}.jsonl", [episode(f"e{day}"), decision(f"e{day}", step=0),
                                                                 simulation(f"e{day}", step=0)]))
        before = Store(home).sql(rows).fetchall()
        watermark = pairs(Store(home))
        report = run(home)
    assert report.compacted == {"batches": 3, "files": 9, "files_after": 3}
    assert len(Store(home).manifests()) == 1
    merged = Store(home).sql(rows).fetchall()
    assert len(merged) == 3 and len({r[4] for r in merged}) == 3  # three batches' rows, each still its own
    assert merged[:2] == before and pairs(Store(home))[0][2] == report.batch != watermark[0][2]
    assert check(home)["problems"] == [] and run(home).batch is None  # the ledger knows every file
    with open(logs[0], "a") as f:
        f.write(json.dumps(decision("e0", step=1)) + "\n")
    assert run(home).records == {"decision": 1} and count(home, "decisions") == 4
    replaced = [home.lake / rel for m in Store(home).manifests() for rel in m.get("replaced_files", [])]
    assert replaced and all(p.exists() for p in replaced)  # readers that listed them may still be reading
    later = datetime.now(timezone.utc) + timedelta(seconds=compact.SWEEP_AFTER_SECONDS + 1)
    with home.lock("consolidate"):  # a night is running: nothing is deleted
        compact.compact(home, Store(home), home.settings().ingest, later)
    assert all(p.exists() for p in replaced)
    compact.compact(home, Store(home), home.settings().ingest, later)
    assert not any(p.exists() for p in replaced) and count(home, "decisions") == 4
    assert check(home)["problems"] == [] and [r for r in Store(home).sql(rows).fetchall() if r[:2] != ("e0", 1)] == merged


def test_a_compaction_cut_by_a_crash_is_finished_or_undone(home):
    """Killed after staging, the compaction is undone; after its commit, the replaced manifests are removed by
    the next run's recovery: the lake never shows a row twice or loses one."""
    (home.root / "dmn.toml").write_text("[ingest]\ncompact_batches = 2\n")
    for day in range(2):
        write_jsonl(home.inbox / f"day{day}.jsonl", [episode(f"e{day}"), decision(f"e{day}", step=0)])
        if day:
            for point in ("compact.staged", "compact.committed"):
                killed = dmn("ingest", home=home, env={**os.environ, "DMN_KILL_AT": point})
                assert killed.returncode < 0 and count(home, "decisions") == 2
        else:
            run(home)
    assert len(os.listdir(home.catalog)) == 3  # the merged batch and the two it replaces
    report = run(home)
    assert any("compacted batch" in line for line in report.recovered) and len(os.listdir(home.catalog)) == 1
    assert count(home, "decisions") == 2 and list(home.tmp.glob("b*")) == []
