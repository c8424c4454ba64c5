"""Where a home stands: per world, what System 1 serves, what the last night did, what the lake holds;
and the inbox's logs not ingested yet, and what was quarantined. And whether it is whole (`check`).

    >>> status(Home.resolve())["worlds"]["CartPole-v1"]["bundle"]["version"]  # doctest: +SKIP
    'v000003'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dmn.bundle import publish
from dmn.errors import DmnError
from dmn.home import Home
from dmn.lake.duck import run
from dmn.lake.store import Store
from dmn.ops.sql import store
from dmn.records import LAKE_TABLES


def status(home: Home) -> dict[str, Any]:
    """The home's state as plain data (what `dmn status --json` prints)."""
    con = store(home).connect({"episodes", "decisions", "simulations", "artifacts", "consolidations", "ingest_files",
                               "quarantine"})  # not the provenance views: they put every decision in a situation
    lake = {world: {"episodes": episodes, "decisions": decisions, "simulations": simulations}
            for world, episodes, decisions, simulations in run(con, """
                SELECT world, count(DISTINCT episode_id) FILTER (WHERE kind = 'e'),
                       count(*) FILTER (WHERE kind = 'd'), count(*) FILTER (WHERE kind = 's')
                FROM (SELECT world, episode_id, 'e' AS kind FROM episodes
                      UNION ALL SELECT world, episode_id, 'd' FROM decisions
                      UNION ALL SELECT world, episode_id, 's' FROM simulations)
                GROUP BY world ORDER BY world""")}
    bundles = {world: {"version": version, "encoder": encoder, "created_at": created, "coverage": coverage,
                       "precision": precision}
               for world, version, encoder, created, coverage, precision in run(con, """
                   SELECT world, version, encoder, strftime(timezone('UTC', created_at), '%Y-%m-%dT%H:%M:%SZ'),
                          coverage, precision
                   FROM artifacts WHERE current""")}
    nights = {world: {"status": status_, "reason": reason or None, "ended_at": ended, "duration_seconds": seconds,
                      "version": version, "live_precision": live}
              for world, status_, reason, ended, seconds, version, live in run(con, """
                  SELECT world, status, reason, strftime(timezone('UTC', ended_at), '%Y-%m-%dT%H:%M:%SZ'),
                         epoch(ended_at) - epoch(started_at), version,
                         -- from the last night that measured it: a night with nothing new has no audits
                         last_value(live_precision IGNORE NULLS) OVER (PARTITION BY world ORDER BY started_at
                             ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
                  FROM consolidations WHERE world IS NOT NULL
                  QUALIFY row_number() OVER (PARTITION BY world ORDER BY started_at DESC) = 1""")}
    out = {}
    for world in sorted(set(lake) | set(nights) | set(bundles)):
        out[world] = {
            "bundle": bundles.get(world),
            "last_night": nights.get(world),
            "lake": lake.get(world, {"episodes": 0, "decisions": 0, "simulations": 0}),
        }
    consumed = dict(run(con, "SELECT path, max(bytes_consumed) FROM ingest_files GROUP BY path"))
    waiting = {}  # inbox file -> bytes not ingested yet (files are appended to, so count bytes, not files)
    for p in home.inbox.rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            left = p.stat().st_size - (consumed.get(str(p.relative_to(home.root))) or 0)  # paths kept home-relative
            if left > 0:
                waiting[p] = left
    retired = [n for path, n in consumed.items()  # ingested whole, then removed by retention (or by hand)
               if Path(path).parts[:1] == ("inbox",) and not (home.root / path).exists()]
    quarantined = dict(run(con, "SELECT reason, count(*) FROM quarantine GROUP BY reason ORDER BY count(*) DESC"))
    return {"home": str(home.root), "worlds": out,
            "inbox": {"files": len(waiting), "bytes": sum(waiting.values()),
                      "retired": {"files": len(retired), "bytes": sum(retired)}},
            "quarantined": quarantined}


def check(home: Home) -> dict[str, Any]:
    """Check that a home is whole, as after a crash or a full disk: the catalog opens, every lake file it
    lists is readable, no episode or decision is there twice, and every world's published bundle verifies
    (checksums, and signature when DMN_SIGNING_KEY is set). Returns the figures and the problems found.

    >>> check(Home.resolve())["problems"]  # doctest: +SKIP
    []
    """
    lake, problems = Store(home), []
    try:
        home.settings()
    except DmnError as exc:  # the next night would stop on it
        problems.append(str(exc))
    manifests = lake.manifests()  # raises DmnError when the catalog itself is damaged
    files = [f for table in LAKE_TABLES for f in lake.files(table, manifests)]
    for path in files:
        try:
            pq.read_metadata(path)
        except (OSError, pa.ArrowException) as exc:
            problems.append(f"lake file {path} is unreadable ({exc})")
    figures = {"batches": len(manifests), "files": len(files)}
    if not problems:
        con = lake.connect()
        for table, key in (("episode_starts", "episode_id"), ("decisions", "(episode_id, step)")):
            rows, keys = run(con, f"SELECT count(*), count(DISTINCT {key}) FROM {table}")[0]
            figures[table] = rows
            if rows != keys:
                problems.append(f"{rows - keys} rows of {table} are there twice")
        figures["simulations"] = run(con, "SELECT count(*) FROM simulations")[0][0]
    published = {}
    for world in publish.worlds(home):
        version = publish.current(home, world)
        if version is None:
            continue
        try:
            publish.verify(publish.folder(home, world) / version)
            published[world] = version
        except DmnError as exc:
            problems.append(f"{world}: CURRENT names {version}, which does not verify: {exc}")
    return {"home": str(home.root), **figures, "published": published, "problems": problems}
