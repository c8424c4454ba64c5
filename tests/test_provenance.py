"""Provenance: which decisions taught a situation, what a night changed (`dmn diff`), and a night that
changes nothing (`--dry-run`), each on a home where the answer is known."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
from conftest import dmn

from dmn.bundle import publish
from dmn.bundle.load import load
from dmn.config import ConsolidateSettings
from dmn.home import Home
from dmn.lake.ingest import ingest
from dmn.lake.store import Store
from dmn.ops.sql import store
from dmn.sleep.night import consolidate, runs
from dmn.wake.logger import EpisodeLogger

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def readme_query(question: str, world: str = "synthetic", **literals: str) -> str:
    """The README's query under the comment `-- question`, asked of `world` (and its other literals replaced)."""
    query = re.search(rf"-- {re.escape(question)}\n(.+?);", README, re.S).group(1).replace("'CartPole-v1'", f"'{world}'")
    for old, new in literals.items():
        assert old in query, old
        query = query.replace(old, new)
    return query


def test_which_episodes_taught_a_situation_its_action(world):
    """The README's first question, against the lake's own decisions put in situations by the bundle itself."""
    home, truth = world
    bundle = load(home, "synthetic")
    situation = int(bundle.answer(truth.centres[:1]).situation[0])
    con = Store(home).connect({"decisions"})
    episode, source, action, states = zip(*con.sql(
        "SELECT episode_id, source, action, state FROM decisions WHERE world = 'synthetic'").fetchall())
    here = bundle.answer(np.asarray(states, np.float32)).situation == situation
    taught_action = bundle.table["best_action"][situation].as_py()
    expected: dict[str, int] = {}
    for e, s, a, h in zip(episode, source, action, here):
        if h and s == "system2" and a == taught_action:
            expected[e] = expected.get(e, 0) + 1
    assert expected, "the situation was taught by some episodes"
    answered = store(home).sql(readme_query("Which episodes taught System 1 to push left in situation 7?", **{
        "l.situation = 7": f"l.situation = {situation}", "s.action = '0'": f"s.action = '{taught_action}'"})).fetchall()
    assert {e: n for e, _, n in answered} == expected
    assert [n for _, _, n in answered] == sorted(expected.values(), reverse=True)


def test_a_dry_run_and_a_diff_name_the_situations_a_night_changed(world, tmp_path):
    """A day in which System 2 changed its mind in one situation and met a new one: the dry run says so
    without publishing or recording anything; the real night then publishes it, and `dmn diff` and the
    `bundle_changes` view say the same."""
    shutil.copytree(world[0].root, tmp_path / "home")
    home, truth = Home.resolve(tmp_path / "home"), world[1]
    before = load(home, "synthetic")
    flipped, new_centre = 2, truth.far(1, seed=7)[0] * 3
    now_best = (truth.best[flipped] + 1) % 3
    if now_best == truth.vetoed[flipped]:
        now_best = (now_best + 1) % 3
    rng = np.random.default_rng(3)
    with EpisodeLogger(home, world="synthetic", encoder="synthetic@1") as log:
        for _ in range(40):
            log.episode()
            for step in range(20):
                centre, best = ((truth.centres[flipped], now_best) if step % 2 else (new_centre, 0))
                state = (centre + truth.noise * rng.standard_normal(centre.shape)).astype(np.float32)
                for a in range(3):
                    log.simulation(step, state, a, float(a == best), vetoed=False)
                log.decision(step, state, int(best), source="system2")
            log.end()
    records = len(runs(home))
    settings = ConsolidateSettings(policy_hidden=32, policy_epochs=10, coverage_tolerance=1.0)
    ingest(home)
    preview = consolidate(home, settings=settings, dry_run=True)[0]
    assert preview.status == "would publish", preview.reason
    assert publish.current(home, "synthetic") == before.version and len(runs(home)) == records  # nothing written

    change = preview.metrics["diff"]
    rows: dict[str, list[dict]] = {}
    for r in change["situations"]:
        rows.setdefault(r["change"], []).append(r)
    states, which = truth.situations(2000, seed=9)
    old_flipped = set(before.answer(states[which == flipped]).situation.tolist())
    assert rows["action"] and {(r["previous"] in old_flipped, r["previous_action"], r["action"]) for r in rows["action"]} \
        == {(True, str(truth.best[flipped]), str(now_best))}
    assert rows["added"] and {r["action"] for r in rows["added"]} == {"0"}

    published = consolidate(home, settings=settings)[0]
    assert published.status == "published", published.reason
    after = load(home, "synthetic")
    assert int(after.answer(new_centre[None]).situation[0]) in {r["situation"] for r in rows["added"]}
    shown = json.loads(dmn("diff", "--world", "synthetic", "--json", home=home).stdout)
    assert shown["old"] == before.version and shown["new"] == after.version
    assert shown["counts"] == change["counts"]
    assert store(home).sql(readme_query("Which situations did last night change?")).fetchall() == [
        (r["situation"], r["previous"], r["change"], r["previous_action"], r["action"])
        for c in sorted(rows) if c != "same"
        for r in sorted(rows[c], key=lambda r: (r["situation"] is None, r["situation"] or 0, r["previous"]))]
    table = dmn("diff", "--world", "synthetic", home=home, env={**os.environ, "COLUMNS": "80"})
    assert table.returncode == 0 and "action" in table.stdout and "added" in table.stdout
    assert max(len(line) for line in table.stdout.splitlines()) <= 80


def test_diff_explains_what_it_cannot_compare(world, tmp_path):
    shutil.copytree(world[0].root, tmp_path / "home")
    home = Home.resolve(tmp_path / "home")
    only = dmn("diff", "--world", "synthetic", home=home)
    assert only.returncode == 1 and "none before it" in only.stderr and "Traceback" not in only.stderr
    missing = dmn("diff", "--world", "nowhere", home=home)
    assert missing.returncode == 1 and "no bundle published" in missing.stderr
    bad = dmn("diff", "--world", "synthetic", "../x", "v000001", home=home)
    assert bad.returncode == 1 and "not a bundle version" in bad.stderr


def test_status_and_the_report_never_build_the_provenance_views(world, monkeypatch, tmp_path):
    """They put every decision in a situation: only a query that names them pays for that."""
    from dmn.ops import provenance
    from dmn.ops.report import report
    from dmn.ops.status import status

    def refuse(home):
        raise AssertionError("a provenance view was built")

    for name in ("situations", "lessons", "bundle_changes"):
        monkeypatch.setattr(provenance, name, refuse)
    assert status(world[0])["worlds"]["synthetic"]["bundle"]["version"]
    assert report(world[0], out=tmp_path / "report").is_file()
