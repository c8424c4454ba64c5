"""The nightly job as data: a schedule and stages, read from a TOML file (`jobs/nightly.toml`).

    >>> job = load(Path("jobs/nightly.toml"))  # doctest: +SKIP
    >>> run(Home.resolve(), job)                # doctest: +SKIP

A stage ingests the inbox, consolidates (one world, or every world with new experience), or writes the
report; the job runs them in order. `dmn daemon --job` runs a job on its schedule and `dmn consolidate
--job` runs its stages once, so both do the same night. Without a file, the job is `nightly()`: ingest,
then consolidate, at 03:00 — which is what a plain `dmn consolidate` runs too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmn import faults
from dmn.config import ConsolidateSettings, Section, bounded, choice, read_toml, section
from dmn.errors import DmnError
from dmn.home import Home
from dmn.lake.ingest import ingest
from dmn.progress import Progress, quiet
from dmn.sleep.night import Consolidation, consolidate

STAGES = ("ingest", "consolidate", "report")
"""What a stage can run: ingest the inbox; consolidate; write the HTML report."""


@dataclass
class Schedule(Section):
    cron: str = "0 3 * * *"
    """When the daemon runs the job: five cron fields, local time."""
    idle_after: float = bounded(0.0, ge=0)
    """Also run once new logs have stopped arriving for this many seconds (0: never)."""


@dataclass
class Stage(Section):
    run: str = choice("consolidate", STAGES)
    """One of STAGES."""
    world: str | None = None
    """Only this world (consolidate, report); None: every world."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Overrides of the home's [consolidate] settings (consolidate only)."""

    def check(self) -> None:
        if self.settings and self.run != "consolidate":
            raise ValueError("only a consolidate stage takes settings")


@dataclass
class Job:
    name: str
    schedule: Schedule = field(default_factory=Schedule)
    stages: list[Stage] = field(default_factory=lambda: [Stage("ingest"), Stage("consolidate")])


def nightly(world: str | None = None) -> Job:
    """The night when no job file says otherwise: ingest the inbox, then consolidate (`world`, or every
    world with new System 2 experience), at 03:00."""
    return Job("nightly", stages=[Stage("ingest"), Stage("consolidate", world)])


def load(path: Path) -> Job:
    """The job in the TOML file at `path`; a mistake in it is one clear DmnError."""
    path = Path(path)
    if not path.is_file():
        raise DmnError(f"{path}: cannot read the job (no such file)")
    data = read_toml(path)
    unknown = sorted(set(data) - {"schedule", "stages"})
    if unknown:
        raise DmnError(f"{path}: unknown section(s) {unknown}; known: schedule, stages")
    schedule = section(Schedule, data.get("schedule", {}), path, "schedule")
    stages = []
    for i, raw in enumerate(data.get("stages", []), 1):
        stage = section(Stage, raw, path, f"stages {i}")
        section(ConsolidateSettings, stage.settings, path, f"stages {i} settings")  # checked now, not at 3 am
        stages.append(stage)
    if not stages:
        raise DmnError(f"{path}: a job needs at least one [[stages]]")
    return Job(path.stem, schedule, stages)


def run(home: Home, job: Job, on_progress: Progress | None = None,
        wait: float = 0.0, dry_run: bool = False, engine: str | None = None) -> list[Consolidation]:
    """Run the job's stages in order, once; returns the nights its consolidate stages ran. Each stage waits up
    to `wait` seconds for another ingest or consolidation of the home to finish (else `Busy`). A `dry_run`
    changes nothing: its consolidate stages publish nothing and record no run (`consolidate`), and the
    ingest and report stages, which would write, are left out (the night reads the lake as it is). `engine`
    runs the ingest and consolidate stages ("local" or "ray"; default: the settings' `[engine] kind`)."""
    say = on_progress or quiet
    nights: list[Consolidation] = []
    for stage in job.stages:
        if dry_run and stage.run != "consolidate":
            continue
        if stage.run == "ingest":
            say("ingesting the inbox")
            ingest(home, wait=wait, on_progress=say, engine=engine)
            faults.point("job.ingested")
        elif stage.run == "consolidate":
            settings = dataclasses.replace(home.settings().consolidate, **stage.settings)
            nights += consolidate(home, stage.world, settings=settings, on_progress=say, wait=wait, dry_run=dry_run,
                                  engine=engine)
        else:
            from dmn.ops.report import report  # matplotlib: only for a job that reports

            say(f"report written to {report(home, stage.world)}")
    return nights
