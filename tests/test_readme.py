"""The README's promises: its test command is CI's, and its example queries run."""

from __future__ import annotations

import re
from pathlib import Path

from dmn.ops.sql import store

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_ci_runs_exactly_the_readme_test_command():
    commands = re.findall(r"```sh\n(.+?)\n```", README)
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert commands[1] == ci


def test_readme_queries_run(home):
    from conftest import decision, episode, run, simulation, write_jsonl

    write_jsonl(home.inbox / "a.jsonl", [episode(), simulation(vetoed=False, cost_ms=2.0), decision(),
                                         {"type": "episode_end", "episode_id": "e1", "return": 1.0, "success": True},
                                         episode("e2", world="arm"), decision("e2", action=[0.5, -1.0])])
    run(home)
    queries = [q.strip() for block in re.findall(r"```sql\n(.+?)```", README, re.S) for q in block.split(";") if q.strip()]
    assert len(queries) == 9
    answers = [store(home).sql(query).fetchall() for query in queries]
    assert [row[2:] for row in answers[6]] == [(1, 1, 0.5, None), (2, 1, -1.0, None)]  # continuous worlds only
    assert answers[7:] == [[], []]  # no bundle yet: tests/test_provenance.py asks them of one


def test_readme_settings_are_the_defaults(tmp_path):
    """The README's dmn.toml lists every setting with its default value, and nothing else."""
    import dataclasses

    from dmn.config import Settings, tomllib
    from dmn.worlds.settings import ReferenceSettings

    block = re.search(r"```toml\n(.+?)```", README, re.S).group(1)
    written = tomllib.loads(block)
    defaults = {**dataclasses.asdict(Settings()), **dataclasses.asdict(ReferenceSettings())}
    for section in ("ingest", "world", "planner", "consolidate", "engine"):
        assert written[section] == defaults[section], section
    (tmp_path / "dmn.toml").write_text(block.replace('hmac_secret = "…"', ""))
    Settings.load(tmp_path / "dmn.toml")  # and it is a valid file


def test_the_readmes_log_format_table_is_the_record_contract():
    from dmn.records import RECORDS

    rows = dict(re.findall(r"^\| `(\w+)` \| (.+) \|$", README.split("## The log format")[1].split("\n\n- ")[0], re.M))
    assert set(rows) == set(RECORDS)
    for rtype, record in RECORDS.items():
        names = re.findall(r"`(\w+)(\??)`", rows[rtype])
        fields = {name: optional == "?" for name, optional in names if name not in ("system1", "system2")}
        assert fields == {f.name: not f.required for f in record.fields}, rtype
