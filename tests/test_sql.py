"""SQL over the store: the views, the lake read straight from Parquet, and queries during an ingest."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import decision, episode, run, simulation, write_jsonl

from dmn.lake.duck import connect, cursor
from dmn.lake.duck import run as sql
from dmn.lake.store import Store
from dmn.sleep.experience import pairs


def test_sessions_draw_no_progress_bar():
    """DuckDB draws a progress bar on stdout for any query past two seconds, into the middle of `dmn sql -f json`
    or a script's own output (a 1 GiB ingest's JSON report, once); dmn's sessions never draw it."""
    con = connect()
    for session in (con, cursor(con)):
        assert sql(session, "SELECT current_setting('enable_progress_bar')") == [(False,)]


def test_views_cover_every_table(home):
    write_jsonl(home.inbox / "a.jsonl", [episode(), simulation(), decision(), "{broken",
                                         {"type": "outcome", "episode_id": "e1", "step": 0, "reward": 2.0},
                                         {"type": "episode_end", "episode_id": "e1", "return": 2.0}])
    run(home)
    store = Store(home)
    for view, n in [("episodes", 1), ("simulations", 1), ("decisions", 1), ("outcomes", 1), ("episode_ends", 1),
                    ("quarantine", 1), ("ingest_files", 1)]:
        assert store.sql(f"SELECT count(*) FROM {view}").fetchone()[0] == n, view


def test_empty_store_has_typed_empty_views(home):
    store = Store(home)
    assert store.sql("SELECT count(*), avg(score) FROM simulations").fetchone() == (0, None)
    assert store.sql("SELECT count(*) FROM ingest_files").fetchone() == (0,)


def test_lake_reads_straight_from_parquet(home):
    write_jsonl(home.inbox / "a.jsonl", [episode(world="ALE/Pong-v5"), simulation(dim=4), simulation(step=1, dim=4)])
    run(home)
    rows = duckdb.sql(f"""SELECT world, step, len(state) FROM read_parquet('{home.lake}/simulations/**/*.parquet')
                          ORDER BY step""").fetchall()
    assert rows == [("ALE/Pong-v5", 0, 4), ("ALE/Pong-v5", 1, 4)]
    import pyarrow.parquet as pq

    table = pq.read_table(Store(home).files("simulations")[0])
    assert str(table.schema.field("state").type) == "fixed_size_list<element: float>[4]"


def test_sql_answers_while_an_ingest_runs(home):
    """Queries during an ingest in another process never fail and see whole batches only."""
    rng = np.random.default_rng(0)
    total = 0
    for f in range(30):
        records = [episode(f"e{f}")] + [simulation(f"e{f}", step=s, dim=64, state=rng.standard_normal(64).round(4).tolist())
                                        for s in range(300)]
        write_jsonl(home.inbox / f"part{f:02d}.jsonl", records)
        total += 300
    (home.root / "dmn.toml").write_text("[ingest]\nchunk_bytes = 1048576\n")
    ingest = subprocess.Popen([sys.executable, "-m", "dmn", "ingest", "--home", str(home.root)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cli = [subprocess.Popen([sys.executable, "-m", "dmn", "sql", "SELECT count(*) AS n FROM simulations",
                             "--home", str(home.root), "-f", "csv"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for _ in range(2)]
    seen = []
    while ingest.poll() is None:
        seen.append(Store(home).sql("SELECT count(*) FROM simulations").fetchone()[0])
        time.sleep(0.01)
    assert ingest.wait() == 0, ingest.stderr.read()
    for query in cli:
        out, err = query.communicate()
        assert query.returncode == 0, err
        assert int(out.splitlines()[1]) in (0, total)
    assert seen and seen[0] == 0, "the ingest finished before the queries could overlap it"
    assert set(seen) <= {0, total}  # one batch: nothing, or all of it
    assert Store(home).sql("SELECT count(*) FROM simulations").fetchone()[0] == total


def test_a_lake_written_before_a_column_existed_reads_it_as_null(home):
    """Files from an older dmn lack columns added to the contract since (here decisions' `reflex`)."""
    write_jsonl(home.inbox / "a.jsonl", [episode("e1"), decision("e1", 0), decision("e1", 1, reflex=1)])
    run(home)
    for path in home.lake.glob("decisions/**/*.parquet"):
        old = pq.read_table(path)
        pq.write_table(old.drop_columns(["reflex"]), path)  # as an older dmn wrote it
    assert Store(home).sql("SELECT step, reflex FROM decisions ORDER BY step").fetchall() == [(0, None), (1, None)]


def test_batches_read_the_same_with_or_without_their_manifests_summaries(home):
    """A manifest says its files' column set (so that a view binds one file per set, not every file) and whose
    decisions it holds (so that a night finds what is new without reading the lake); batches committed before
    manifests said so, alone or beside newer ones, read the same."""
    for day, (world, encoder) in enumerate([("w1", "a"), ("w2", "a"), ("w1", "b"), ("w2", "a")]):
        write_jsonl(home.inbox / f"{day}.jsonl", [episode(f"e{day}", world, encoder), decision(f"e{day}", 0, ts=1e9 + day),
                                                  decision(f"e{day}", 1), simulation(f"e{day}")])
        run(home)
    store = Store(home)
    query = """SELECT d.world, d.encoder, count(*), count(DISTINCT s.episode_id), count(q.reason)
               FROM decisions d LEFT JOIN simulations s USING (episode_id) LEFT JOIN quarantine q USING (episode_id)
               GROUP BY ALL ORDER BY ALL"""
    rows, found = store.sql(query).fetchall(), pairs(store)
    assert [(w, e) for w, e, _ in found] == [("w1", "b"), ("w1", "a"), ("w2", "a")]  # newest encoder first
    manifests = sorted(home.catalog.glob("*.json"))
    assert all({"columns", "decisions"} <= set(json.loads(p.read_bytes())) for p in manifests)
    for path in manifests[:2]:  # as an older dmn committed them
        manifest = json.loads(path.read_bytes())
        del manifest["columns"], manifest["decisions"]
        path.write_text(json.dumps(manifest))
    assert store.sql(query).fetchall() == rows and pairs(store) == found
    for path in manifests[2:]:
        manifest = json.loads(path.read_bytes())
        del manifest["columns"], manifest["decisions"]
        path.write_text(json.dumps(manifest))
    assert store.sql(query).fetchall() == rows and pairs(store) == found


def test_a_query_gets_the_views_it_names(home):
    write_jsonl(home.inbox / "a.jsonl", [episode(), decision()])
    run(home)
    store = Store(home)
    assert store.named("SELECT * FROM Decisions d JOIN episodes USING (episode_id)") == {"decisions", "episodes"}
    assert store.sql("SELECT count(*) FROM episodes").fetchone() == (1,)  # and what episodes reads
    assert store.sql("SELECT count(*) FROM ingest_files").fetchone() == (1,)
    with pytest.raises(duckdb.CatalogException, match="simulations"):  # a connection for decisions only
        store.connect({"decisions"}).execute("SELECT * FROM simulations")
