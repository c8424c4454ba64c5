"""Sleep and wake on the reference world: days of acting, nights of consolidation.

Day 0 the agent has only System 2. A day is a number of decisions (whole episodes until the agent has made
them), the same in every world, so that each day's audits measure System 1 as finely in a world of short
episodes as in one of long ones. Each night consolidates the day's logs into a bundle; each later
day the agent asks System 1 first (with a share of its answers withheld for audits) and deliberates
when it abstains. One row per day says how much System 1 took over, what it cost, and what the agent
kept: its return normalised between a random policy on the same episodes (0) and day 0's System 2 (1),
`(R - R_random) / (R_day0 - R_random)`.

    >>> for day in demo(Home.resolve(), "CartPole-v1", nights=3):  # doctest: +SKIP
    ...     print(day.day, day.run["system1_share"], day.version)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from dmn.home import Home
from dmn.ops import jobs
from dmn.progress import Progress
from dmn.sleep.night import Consolidation
from dmn.worlds.agent import random_returns, reflexes_for, run
from dmn.worlds.settings import ReferenceSettings


@dataclass
class Day:
    day: int
    run: dict[str, Any]
    """The day's `RunReport.to_dict()`."""
    version: str | None
    """The bundle System 1 served from during the day (None on day 0)."""
    random_return: float
    """A random policy's mean return on the day's episodes (the same seeds)."""
    normalised_return: float | None
    """The day's mean return normalised: (R - R_random) / (R_day0 - R_random) (None when day 0 did no
    better than random, so there is nothing to normalise by)."""
    held_out: dict[str, Any] | None
    """The serving bundle's held-out figures (test coverage, precision, exact precision), as the night before
    the day measured them (`_held_out`): what the day's live figures are held against."""
    night_seconds: float | None = None
    """Wall time of the night after the day (ingest included); None after the last day."""
    night: str | None = None
    """What that night did: published vN, kept (and why), nothing new, failed (and why)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def demo(home: Home, env_id: str = "CartPole-v1", *, nights: int = 3, decisions_per_day: int = 10_000,
         audit_rate: float = 0.03, seed: int = 0, settings: ReferenceSettings | None = None,
         on_progress: Progress | None = None,
         on_day: Callable[[Day], None] | None = None) -> list[Day]:
    """Day 0 with System 2 only, then `nights` times: a night of consolidation and a day with reflexes.
    Returns one `Day` per day; `on_day` hears of each as it ends. Episode seeds run on from `seed`, day
    after day."""
    if nights < 1:
        raise ValueError(f"nights must be at least 1, got {nights}")
    if decisions_per_day < 1:
        raise ValueError(f"decisions_per_day must be at least 1, got {decisions_per_day}")
    settings = settings or ReferenceSettings.load(home)
    reflexes = None
    days: list[Day] = []
    first, held = seed, None  # the day's first episode; the serving bundle's held-out figures
    for day in range(nights + 1):
        report = run(home, env_id, episodes=0, decisions=decisions_per_day, seed=first, reflexes=reflexes,
                     settings=settings, on_progress=on_progress).to_dict()
        floor = float(np.mean(random_returns(env_id, report["episodes"], first)))
        first += report["episodes"]
        scale = (days[0].run["mean_return"] - days[0].random_return) if days else report["mean_return"] - floor
        days.append(Day(day, report, reflexes.version if reflexes else None, floor,
                        (report["mean_return"] - floor) / scale if scale > 0 else None, held))
        if day < nights:
            started = time.perf_counter()
            night = jobs.run(home, jobs.nightly(env_id), on_progress=on_progress)[0]
            days[-1].night_seconds = time.perf_counter() - started
            days[-1].night = (f"{night.status} {night.version}" if night.status == "published" else
                              night.status + (f": {night.reason}" if night.reason else ""))
            if reflexes is None:
                reflexes = reflexes_for(home, env_id, audit_rate=audit_rate, seed=seed, settings=settings)
            reflexes.refresh()
            held = _held_out(night, reflexes.manifest)
        if on_day:
            on_day(days[-1])
    return days


def _held_out(night: Consolidation, manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """The held-out figures of the bundle that serves after `night`, as measured on the newest held-out steps:
    the new bundle's when the night published one, else the serving bundle's on the night's held-out steps;
    when the night measured nothing (nothing new, failed early), those the serving bundle's own night
    measured (its `manifest`'s)."""
    figures = night.metrics.get("combined" if night.status == "published" else "published")
    figures = figures or (manifest["metrics"]["combined"] if manifest else None)
    return {k: figures.get(k) for k in ("coverage", "precision", "exact_precision")} if figures else None
