"""The nightly job as data: a schedule and stages, read from a TOML file (`jobs/nightly.toml`).

    >>> job = load(Path("jobs/nightly.toml"))  # doctest: +SKIP
    >>> run(Home.resolve(), job)                # doctest: +SKIP

`dmn daemon --job` runs a job on its schedule and `dmn consolidate --job` runs its stages once, so
both do the same night. Without a file, the job is `DEFAULT`: consolidate at 03:00.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dmn.config import ConsolidateSettings, section, tomllib
from dmn.consolidate import Consolidation, consolidate
from dmn.errors import DmnError
from dmn.home import Home
from dmn.ingest import ingest

STAGES = ("ingest", "consolidate", "report")
"""What a stage can run: ingest the inbox; ingest and consolidate; write the HTML report."""


@dataclass
class Stage:
    run: str
    """One of STAGES."""
    world: str | None = None
    """Only this world (consolidate, report); None: every world."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Overrides of the home's [consolidate] settings (consolidate only)."""


@dataclass
class Job:
    name: str
    cron: str = "0 3 * * *"
    """When the daemon runs it: five cron fields, local time."""
    idle_after: float | None = None
    """Also run once new logs have stopped arriving for this many seconds (None: never)."""
    stages: list[Stage] = field(default_factory=lambda: [Stage("consolidate")])


DEFAULT = Job("nightly")


def load(path: Path) -> Job:
    """The job in the TOML file at `path`; a mistake in it is one clear DmnError."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DmnError(f"{path}: cannot read the job ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DmnError(f"{path}: not valid TOML ({exc})") from None
    unknown = sorted(set(data) - {"schedule", "stages"})
    if unknown:
        raise DmnError(f"{path}: unknown section(s) {unknown}; known: schedule, stages")
    schedule = data.get("schedule", {})
    extra = sorted(set(schedule) - {"cron", "idle_after"})
    if extra:
        raise DmnError(f"{path}: unknown setting(s) in [schedule]: {extra}; known: cron, idle_after")
    idle = schedule.get("idle_after", 0)
    if not isinstance(idle, (int, float)) or isinstance(idle, bool) or idle < 0:
        raise DmnError(f"{path}: [schedule] idle_after must be zero or more seconds, got {idle!r}")
    stages = []
    for i, raw in enumerate(data.get("stages", []), 1):
        where = f"{path}: stage {i}"
        if not isinstance(raw, dict) or raw.get("run") not in STAGES:
            raise DmnError(f"{where}: `run` must be one of {', '.join(STAGES)}")
        extra = sorted(set(raw) - {"run", "world", "settings"})
        if extra:
            raise DmnError(f"{where}: unknown key(s) {extra}; known: run, world, settings")
        if raw.get("settings") and raw["run"] != "consolidate":
            raise DmnError(f"{where}: only a consolidate stage takes settings")
        section(ConsolidateSettings, raw.get("settings", {}), Path(where), "stages.settings")  # validates them
        stages.append(Stage(raw["run"], raw.get("world"), dict(raw.get("settings", {}))))
    if not stages:
        raise DmnError(f"{path}: a job needs at least one [[stages]]")
    return Job(Path(path).stem, str(schedule.get("cron", DEFAULT.cron)), float(idle) or None, stages)


def run(home: Home, job: Job, on_progress: Callable[[str], None] | None = None,
        wait: float = 0.0) -> list[Consolidation]:
    """Run the job's stages in order, once; returns the nights its consolidate stages ran. A consolidate
    stage waits up to `wait` seconds for another consolidation of the home to finish (else `Busy`)."""
    nights: list[Consolidation] = []
    for stage in job.stages:
        if stage.run == "ingest":
            ingest(home)
        elif stage.run == "consolidate":
            settings = dataclasses.replace(home.settings().consolidate, **stage.settings)
            nights += consolidate(home, stage.world, settings=settings, on_progress=on_progress, wait=wait)
        else:
            from dmn.report import report

            path = report(home, stage.world)
            if on_progress:
                on_progress(f"report written to {path}")
    return nights
