"""Where a home stands: per world, what System 1 serves, what the last night did, what the lake holds;
and the inbox's logs not ingested yet, and what was quarantined.

    >>> status(Home.resolve())["worlds"]["CartPole-v1"]["bundle"]["version"]  # doctest: +SKIP
    'v000003'
"""

from __future__ import annotations

from typing import Any

from dmn import publish
from dmn.home import Home
from dmn.store import Store, consolidation_runs, run


def status(home: Home) -> dict[str, Any]:
    """The home's state as plain data (what `dmn status --json` prints)."""
    con = Store(home).connect()
    lake = {world: {"episodes": episodes, "decisions": decisions, "simulations": simulations}
            for world, episodes, decisions, simulations in run(con, """
                SELECT world, count(DISTINCT episode_id) FILTER (WHERE kind = 'e'),
                       count(*) FILTER (WHERE kind = 'd'), count(*) FILTER (WHERE kind = 's')
                FROM (SELECT world, episode_id, 'e' AS kind FROM episodes
                      UNION ALL SELECT world, episode_id, 'd' FROM decisions
                      UNION ALL SELECT world, episode_id, 's' FROM simulations)
                GROUP BY world ORDER BY world""")}
    last_runs: dict[str, dict] = {}
    live: dict[str, float | None] = {}  # from the last night that measured it ("nothing new" nights do not)
    for record in consolidation_runs(home):
        last_runs[record.get("world")] = record
        measured = (record.get("metrics") or {}).get("live", {})
        if measured.get("audited"):
            live[record.get("world")] = measured["precision"]
    worlds = sorted(set(lake) | {w for w in last_runs if w} | {m["world"] for m in publish.manifests(home)})
    out = {}
    for world in worlds:
        version = publish.current(home, world)
        manifest = next((m for m in publish.manifests(home) if m["world"] == world and m["current"]), None)
        last = last_runs.get(world)
        out[world] = {
            "bundle": None if manifest is None else {
                "version": version, "encoder": manifest.get("encoder"), "created_at": manifest.get("created_at"),
                "coverage": manifest["metrics"]["combined"]["coverage"],
                "precision": manifest["metrics"]["combined"]["precision"]},
            "last_night": None if last is None else {
                "status": last["status"], "reason": last.get("reason") or None, "ended_at": last.get("ended_at"),
                "version": last.get("version"),
                "live_precision": live.get(world)},
            "lake": lake.get(world, {"episodes": 0, "decisions": 0, "simulations": 0}),
        }
    consumed = dict(run(con, "SELECT path, max(bytes_consumed) FROM ingest_files GROUP BY path"))
    waiting = {}  # inbox file -> bytes not ingested yet (files are appended to, so count bytes, not files)
    for p in home.inbox.rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            left = p.stat().st_size - (consumed.get(str(p.relative_to(home.root))) or 0)  # paths kept home-relative
            if left > 0:
                waiting[p] = left
    quarantined = dict(run(con, "SELECT reason, count(*) FROM quarantine GROUP BY reason ORDER BY count(*) DESC"))
    return {"home": str(home.root), "worlds": out,
            "inbox": {"files": len(waiting), "bytes": sum(waiting.values())},
            "quarantined": quarantined}
