"""The `dmn` command: a thin layer over the library, one library call per command.

A user mistake (a bad path, a bad query, a busy home) prints one line and exits 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as ProgressBar
from rich.table import Table

from dmn.errors import DmnError
from dmn.home import Home
from dmn.progress import Progress, quiet

app = typer.Typer(
    help="dmn: sleep-time memory consolidation for world-model agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

HomeOption = typer.Option(None, "--home", help="The dmn home (default: $DMN_HOME, else ./dmn-home).", show_default=False)
EngineOption = typer.Option(None, "--engine", help="What ingests and reads the night's window: local, or ray (a Ray "
                            "cluster: [engine] address, else $RAY_ADDRESS); default: [engine] kind in dmn.toml, else "
                            "local.", show_default=False)


@app.command()
def ingest(
    paths: Optional[list[Path]] = typer.Argument(None, help="Files or folders to ingest (default: the home's inbox)."),
    home: Optional[Path] = HomeOption,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    engine: Optional[str] = EngineOption,
) -> None:
    """Ingest agents' logs (.jsonl, .jsonl.gz, Lár run_*.json, dmn Parquet) into the episode store.

    Example: dmn ingest --home ./dmn-home ./more-logs/   or   RAY_ADDRESS=head:6379 dmn ingest --engine ray
    """
    with _needs("night"):
        from dmn.lake.ingest import ingest as run_ingest

    with _progress() as say:
        report = run_ingest(Home.resolve(home), [str(p) for p in paths] if paths else None, on_progress=say,
                            engine=engine)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    summary = Table(title=f"ingest {'batch ' + report.batch if report.batch else '(nothing new)'}", show_header=False)
    summary.add_row("files read", str(report.files_read))
    for reason, n in report.skipped.items():
        summary.add_row(f"skipped: {reason}", str(n))
    for rtype, n in report.records.items():
        summary.add_row(f"{rtype} records", f"{n:,}")
    for reason, n in report.quarantined.items():
        summary.add_row(f"[yellow]quarantined: {reason}[/]", f"{n:,}")
    if report.duplicates:
        summary.add_row("duplicates dropped", f"{report.duplicates:,}")
    if report.pending_bytes:
        summary.add_row("unterminated bytes left for next run", f"{report.pending_bytes:,}")
    if report.retired:
        summary.add_row("ingested files removed from the inbox", f"{report.retired['files']:,} "
                                                                  f"({report.retired['bytes']:,} bytes)")
    if report.compacted:
        summary.add_row("batches compacted into one", f"{report.compacted['batches']:,} "
                        f"({report.compacted['files']:,} files into {report.compacted['files_after']:,})")
    summary.add_row("seconds", f"{report.seconds:.2f}")
    out.print(summary)
    for line in report.recovered:
        err.print(f"recovery: {line}")


@app.command()
def sql(
    query: str = typer.Argument(..., help="A SQL query over the views episodes, simulations, decisions, outcomes, "
                                "episode_ends, quarantine, ingest_files, consolidations, artifacts (dmn.ops.sql.VIEWS)."),
    home: Optional[Path] = HomeOption,
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json (one JSON object per line)."),
) -> None:
    """Query the episode store with SQL (DuckDB dialect).

    Example: dmn sql "SELECT world, count(*) AS decisions FROM decisions WHERE source = 'system2' GROUP BY world"
    """
    with _needs("night"):
        from dmn.ops.sql import store

    if fmt not in ("table", "csv", "json"):
        raise DmnError(f"--format must be table, csv or json, not {fmt!r}")
    if not query.strip():
        raise DmnError("the query is empty")
    result = store(_existing(home)).sql(query)
    if result.description is None:  # a statement without a result set
        return
    names = [d[0] for d in result.description]
    rows = result.fetchall()
    if fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(names)
        writer.writerows(rows)
    elif fmt == "json":
        for row in rows:
            sys.stdout.write(json.dumps(dict(zip(names, row)), default=_jsonable) + "\n")
    else:
        table = Table(*names)
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
        out.print(table)


@app.command()
def consolidate(
    world: Optional[str] = typer.Option(None, "--world", "-w", help="Only this world (default: every world with new data)."),
    job_file: Optional[Path] = typer.Option(None, "--job", help="Run this job's stages once instead (e.g. jobs/nightly.toml)."),
    wait: float = typer.Option(0.0, "--wait", min=0.0,
                               help="If another consolidation is running, wait up to this many seconds (default: exit 1)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Publish nothing and record no run: say what the gate would "
                                 "decide and what would change (the inbox is not ingested)."),
    home: Optional[Path] = HomeOption,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per world."),
    engine: Optional[str] = EngineOption,
) -> None:
    """Ingest the inbox, then distil System 2's simulations into System 1 bundles (the nightly job).

    Example: dmn consolidate --world CartPole-v1   or   dmn consolidate --job jobs/nightly.toml   or   dmn consolidate --dry-run
    or   RAY_ADDRESS=head:6379 dmn consolidate --engine ray
    """
    with _needs("night"):
        from dmn.ops.jobs import load, nightly, run

    if job_file and world:
        raise DmnError("--job and --world do not go together: a job's stages name their worlds")
    job = load(job_file) if job_file else nightly(world)
    with _progress() as say:
        nights = run(Home.resolve(home), job, on_progress=say, wait=wait, dry_run=dry_run, engine=engine)
    if as_json:
        for night in nights:
            sys.stdout.write(json.dumps(night.to_dict()) + "\n")
    elif not nights:
        out.print("no System 2 decisions in the store yet: nothing to consolidate")
    else:
        for night in nights:
            out.print(_night_table(night))
            if "diff" in night.metrics:
                out.print(_diff_table(night.metrics["diff"]))
    failed = [f"{n.world}: {n.reason}" for n in nights if n.status == "failed"]
    if failed:
        raise DmnError("consolidation failed for " + "; ".join(failed))


def _night_table(night: Any) -> Table:
    m = night.metrics.get("combined", {})
    table = Table(title=f"{night.world} ({night.encoder}): {night.status}", show_header=False)
    table.add_row("published", night.version or "-")
    table.add_row("current bundle", night.current or "-")
    if night.reason:
        table.add_row("why", escape(night.reason))
    for key in ("steps", "simulations", "episodes"):
        if key in night.counts:
            table.add_row(key, f"{night.counts[key]:,}")
    if m:
        table.add_row("test coverage", f"{m['coverage']:.3f}")
        table.add_row("test precision", "-" if m["precision"] is None else f"{m['precision']:.3f}")
        live = night.metrics["live"]
        table.add_row("live precision (audits)", "-" if live["precision"] is None
                      else f"{live['precision']:.3f} of {live['audited']}")
    if night.seconds:
        table.add_row("seconds", ", ".join(f"{k} {v:.2f}" for k, v in night.seconds.items()))
    return table


@app.command()
def diff(
    world: str = typer.Option(..., "--world", "-w", help="The world whose bundles to compare."),
    old: Optional[str] = typer.Argument(None, help="The older bundle (default: the one kept before NEW)."),
    new: Optional[str] = typer.Argument(None, help="The newer bundle (default: the current one)."),
    everything: bool = typer.Option(False, "--all", help="List the situations that stayed the same too."),
    home: Optional[Path] = HomeOption,
    as_json: bool = typer.Option(False, "--json", help="Print the difference as one JSON object."),
) -> None:
    """What changed between two bundles of a world: situations added, gone, or whose action, demotion or
    confidence changed (matched by their centroids), and the thresholds and held-out figures.

    Example: dmn diff --world CartPole-v1   or   dmn diff --world CartPole-v1 v000002 v000004 --json
    """
    with _needs("night"):
        from dmn.bundle.diff import compare

    change = compare(_existing(home), world, old, new).to_dict()
    if as_json:
        out.print_json(json.dumps(change))
    else:
        out.print(_diff_table(change, everything))


def _diff_table(change: dict[str, Any], everything: bool = False) -> Table:
    """A bundle difference (`BundleDiff.to_dict`) as a table: a row per situation that changed (`everything`:
    per situation), the counts and the held-out figures in its caption."""
    counts = ", ".join(f"{n} {c}" for c, n in change["counts"].items()) or "no situations"
    figures = "; ".join(f"{key.replace('_', ' ')} {_share(a)} -> {_share(b)}"
                        for key, (a, b) in change["metrics"].items() if a or b)
    limits = "; ".join(f"{part} threshold {_figure(a)} -> {_figure(b)}" for part, (a, b) in change["thresholds"].items())
    table = Table(title=f"{escape(change['world'])}: {change['old'] or '(none)'} -> {change['new']}",
                  caption=escape(f"{counts}. Held-out {figures}; {limits}.{' ' + change['note'] if change['note'] else ''}"))
    for column in ("now", "was", "change", "action", "confidence", "distance"):
        table.add_column(column, justify="left" if column in ("change", "action") else "right")
    for row in change["situations"]:
        if row["change"] == "same" and not everything:
            continue
        action = row["action"] if row["previous_action"] in (None, row["action"]) else row["previous_action"] \
            if row["action"] is None else f"{row['previous_action']} -> {row['action']}"
        table.add_row(_figure(row["situation"]), _figure(row["previous"]), row["change"], escape(action or "-"),
                      f"{_figure(row['previous_confidence'])} -> {_figure(row['confidence'])}",
                      _figure(row["distance"]))
    return table


@app.command()
def rollback(
    world: str = typer.Option(..., "--world", "-w", help="The world whose bundle to roll back."),
    to: Optional[str] = typer.Option(None, "--to", help="The version to publish again (default: the one before)."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Publish an older kept bundle of a world again.

    Example: dmn rollback --world CartPole-v1 --to v000003
    """
    from dmn.bundle.publish import rollback as run_rollback

    out.print(f"{world}: now serving {run_rollback(_existing(home), world, to)}")


world_app = typer.Typer(help="The reference world: a JEPA world-model agent on Gymnasium (extra `worlds`).",
                        no_args_is_help=True)
app.add_typer(world_app, name="world")


@world_app.command("run")
def world_run(
    env: str = typer.Option("CartPole-v1", "--env", help="A Gymnasium environment with vector observations, and discrete or bounded vector (Box) actions."),
    episodes: int = typer.Option(20, "--episodes", "-n", min=1, help="Episodes to run."),
    seed: int = typer.Option(0, "--seed", help="Seed of the environment's episodes (System 2's own seed is the [planner] setting)."),
    reflexes: bool = typer.Option(False, "--reflexes", help="Ask System 1 first; System 2 plans when it abstains."),
    audit_rate: float = typer.Option(0.0, "--audit-rate", min=0.0, max=1.0,
                                     help="Share of reflex-served steps System 2 plans too, to measure agreement."),
    home: Optional[Path] = HomeOption,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Run the reference agent and log its episodes into the home's inbox (the first run trains its world model).

    Example: dmn world run --env CartPole-v1 --episodes 20 --reflexes --audit-rate 0.05 && dmn consolidate
    """
    with _needs("worlds"):
        from dmn.worlds.agent import reflexes_for, run

    if audit_rate and not reflexes:
        raise DmnError("--audit-rate checks System 1's answers, so it needs --reflexes")
    root = Home.resolve(home)
    with _progress() as say:
        client = reflexes_for(root, env, audit_rate=audit_rate, seed=seed, on_progress=say) if reflexes else None
        if client is not None and client.problem:
            err.print(f"[yellow]System 1 is silent:[/] {escape(client.problem)}", highlight=False)
        report = run(root, env, episodes, seed=seed, reflexes=client, on_progress=say)
    summary = report.to_dict()
    if as_json:
        out.print_json(json.dumps(summary))
        return
    table = Table(title=f"{env}: {summary['episodes']} episodes, encoder {summary['encoder']}", show_header=False)
    for key, value in summary.items():
        if key not in ("world", "encoder", "episodes"):
            table.add_row(key.replace("_", " "), "-" if value is None else _cell(value))
    out.print(table)


@app.command()
def status(
    home: Optional[Path] = HomeOption,
    as_json: bool = typer.Option(False, "--json", help="Print the status as one JSON object."),
) -> None:
    """Per world: the bundle System 1 serves, the last night, the lake; and what waits in the inbox.

    Example: dmn status --home ./dmn-home
    """
    with _needs("night"):
        from dmn.ops.status import status as home_status

    state = home_status(_existing(home))
    if as_json:
        out.print_json(json.dumps(state, default=str))
        return
    _status_grid(state).show(out)
    inbox = state["inbox"]
    retired = inbox["retired"]
    out.print(f"inbox: {inbox['files']:,} file{'' if inbox['files'] == 1 else 's'} ({inbox['bytes']:,} bytes) "
              f"waiting to be ingested; {retired['files']:,} ingested whole and removed ({retired['bytes']:,} bytes, "
              "their records in the lake); quarantined: "
              + (", ".join(f"{n:,} {escape(reason)}" for reason, n in state["quarantined"].items()) or "none"))


@app.command()
def check(
    home: Optional[Path] = HomeOption,
    as_json: bool = typer.Option(False, "--json", help="Print the figures and problems as one JSON object."),
) -> None:
    """Check that a home is whole (after a crash, say): catalog, lake files, no duplicates, bundles verify.

    Exits 1 when it finds a problem. Example: dmn check --home ./dmn-home
    """
    with _needs("night"):
        from dmn.ops.status import check as check_home

    result = check_home(Home.resolve(home, create=False))
    if as_json:
        out.print_json(json.dumps(result))
    else:
        published = ", ".join(f"{escape(w)} {v}" for w, v in result["published"].items()) or "none"
        out.print(f"{result['batches']:,} batches, {result['files']:,} lake files, "
                  f"{result.get('decisions', 0):,} decisions; published bundles that verify: {published}", soft_wrap=True)
        for problem in result["problems"]:
            err.print(f"[red]problem:[/] {escape(problem)}", soft_wrap=True)
    if result["problems"]:
        raise typer.Exit(1)


@app.command()
def report(
    world: Optional[str] = typer.Option(None, "--world", help="Only this world (default: every world)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Where to write it (default: <home>/report)."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Write an HTML report with plots: System 1's share per day, coverage vs precision, the situations, the nights.

    Example: dmn report --world CartPole-v1 --out ./dmn-report && open ./dmn-report/index.html
    """
    with _needs("night"):
        from dmn.ops.report import report as write_report

    out.print(str(write_report(_existing(home), world, out_dir)))


@app.command()
def daemon(
    job_file: Optional[Path] = typer.Option(None, "--job", help="The job to run, as data (e.g. jobs/nightly.toml); "
                                                                 "default: ingest and consolidate at 03:00."),
    cron: Optional[str] = typer.Option(None, "--cron", help="When: a 5-field cron expression, local time (overrides the job's)."),
    interval: Optional[float] = typer.Option(None, "--interval", help="Run every this many seconds instead."),
    idle_after: Optional[float] = typer.Option(None, "--idle-after", min=0.0,
                                               help="Also run once no new logs have arrived for this many seconds."),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="Serve Prometheus metrics (/metrics), the "
                                               "latest report (/) and the status (/status) on this port."),
    log_json: bool = typer.Option(False, "--log-json", help="Log one JSON object per line to stderr."),
    home: Optional[Path] = HomeOption,
    engine: Optional[str] = EngineOption,
) -> None:
    """Run the nightly job on its schedule (and when the agents rest) until stopped with SIGTERM or Ctrl-C.

    Example: dmn daemon --job jobs/nightly.toml --metrics-port 9108
    """
    with _needs("night"):
        from dmn.ops.daemon import log_to_stderr, serve
        from dmn.ops.jobs import load, nightly

    job = load(job_file) if job_file else nightly()
    job.schedule = dataclasses.replace(job.schedule, cron=cron or job.schedule.cron,
                                       idle_after=job.schedule.idle_after if idle_after is None else idle_after)
    log_to_stderr(log_json)
    serve(Home.resolve(home), job, interval=interval, metrics_port=metrics_port, engine=engine)


@app.command()
def alive(
    within: float = typer.Option(30.0, "--within", min=0.0, help="Seconds the daemon's last heartbeat may be old."),
    home: Optional[Path] = HomeOption,
) -> None:
    """Exit 0 if the home's daemon beat within the last SECONDS, night or not; 1 if it is frozen or gone
    (the container's healthcheck).

    Example: dmn alive --within 30
    """
    with _needs("night"):
        from dmn.ops.daemon import alive as beat

    out.print(f"alive: the daemon beat {beat(Home.resolve(home, create=False), within):.1f} s ago")


@app.command()
def demo(
    env: str = typer.Option("CartPole-v1", "--env", help="A Gymnasium environment with vector observations, and discrete or bounded vector (Box) actions."),
    nights: int = typer.Option(3, "--nights", min=1, help="Nights of consolidation, each followed by a day with reflexes."),
    decisions_per_day: int = typer.Option(10_000, "--decisions-per-day", min=1,
                                          help="Decisions the agent makes each day (in whole episodes)."),
    audit_rate: float = typer.Option(0.03, "--audit-rate", min=0.0, max=1.0,
                                     help="Share of System 1's answers withheld so that System 2 checks them."),
    seed: int = typer.Option(0, "--seed", help="Seed of the first day's first episode."),
    home: Optional[Path] = HomeOption,
    as_json: bool = typer.Option(False, "--json", help="Print the days as one JSON list."),
) -> None:
    """Sleep and wake on the reference world: a day of System 2, then nights of consolidation and days with reflexes.

    Example: dmn demo --env Acrobot-v1 --nights 3 --decisions-per-day 5000
    """
    with _needs("worlds"):
        from dmn.worlds.demo import demo as run_demo

    grid = _demo_grid(env)
    first: list[float] = []

    def row(day: Any) -> None:
        r = day.run
        first.append(first[0] if first else r["latency_ms"])
        grid.rows.append(_demo_row(day, first[0]))
        err.print(f"day {day.day}: mean return {r['mean_return']:.1f}, System 1 served {r['system1_share']:.1%}"
                  + (f"; night: {day.night}" if day.night else ""), highlight=False)

    with _progress() as say:
        days = run_demo(Home.resolve(home), env, nights=nights, decisions_per_day=decisions_per_day,
                           audit_rate=audit_rate, seed=seed, on_progress=say, on_day=row)
    if as_json:
        out.print_json(json.dumps([d.to_dict() for d in days]))
    else:
        grid.show(out)


@contextlib.contextmanager
def _progress() -> Iterator[Progress]:
    """Long work's progress on a terminal: what it is doing, and where it says how far it has come, a bar with
    the time it took and an estimate of the time left (each new kind of work starts its own). Silent when
    piped, in the daemon and in CI."""
    if not err.is_terminal:
        yield quiet
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with ProgressBar(*columns, console=err, transient=True) as bar:
        task = bar.add_task("starting…", total=None)

        def say(line: str, done: float | None = None, total: float | None = None) -> None:
            shown = bar.tasks[0]
            if total != shown.total or (done or 0) < shown.completed:  # other work than the bar measured
                bar.reset(task, total=total, completed=done or 0, description=escape(line))
            else:
                bar.update(task, completed=done or 0, description=escape(line))

        yield say


def _status_grid(state: dict[str, Any]) -> Grid:
    """`dmn status`'s table: a row per world."""
    grid = Grid(f"dmn status: {escape(state['home'])}", [
        ("world", "world"), ("bundle", "bundle"), ("coverage", "cover"), ("precision", "prec"),
        ("last night", "last night"), ("live precision", "live"), ("episodes", "episodes"),
        ("decisions", "decisions"), ("simulations", "sims")], left={"world", "bundle", "last night"})
    for world, w in state["worlds"].items():
        bundle, night, lake = w["bundle"] or {}, w["last_night"] or {}, w["lake"]
        grid.rows.append([escape(world), bundle.get("version", "-"), _share(bundle.get("coverage")),
                          _share(bundle.get("precision")),
                          escape(f"{night['status']} ({night['ended_at'][:19]})") if night else "-",
                          _share(night.get("live_precision")), f"{lake['episodes']:,}", f"{lake['decisions']:,}",
                          f"{lake['simulations']:,}"])
    return grid


def _demo_grid(env: str) -> Grid:
    """`dmn demo`'s table, a row per day (`_demo_row`)."""
    return Grid(f"dmn demo: {env}", [
        ("day", "day"), ("return", "R"), ("normalised", "norm"), ("System 1", "S1"), ("precision", "prec"),
        ("held-out", "held"), ("exact", "exact"), ("ms", "ms"), ("faster", "×"), ("imagined", "imag"), ("night", "night")],
        left={"night"}, caption=(
        "normalised (norm): (R - R_random) / (R_day0 - R_random), a random policy on the same episodes; System 1 (S1): "
        "share of decisions it served; precision (prec): its withheld answers as good as System 2's choice, on audits; "
        "held-out (held): the serving bundle's precision on the newest held-out steps, as the night before measured "
        "it; exact: System 2 chose that very action (discrete actions); "
        "faster (×): mean decision latency against day 0's; imagined (imag): action sequences per System 2 decision, "
        "from a cold start / from System 1's proposal (continuous actions); night: the bundle it published, or what it did"))


def _demo_row(day: Any, day0_ms: float) -> list[str]:
    r = day.run
    night = day.night.split(":")[0].replace("published ", "") if day.night else "-"
    return [str(day.day), f"{r['mean_return']:.1f}", "-" if day.normalised_return is None else f"{day.normalised_return:.2f}",
            f"{r['system1_share']:.1%}", _share(r["precision"]), _share(day.held_out["precision"] if day.held_out else None),
            _share(r["agreement"]), _ms(r["latency_ms"]), f"{day0_ms / r['latency_ms']:.1f}×",
            _imagined(r["sequences_per_plan"], r["sequences_per_seeded_plan"]), escape(night)]


@dataclasses.dataclass
class Grid:
    """A table's columns and rows, laid out when printed to fit the console (`show`)."""

    title: str
    columns: list[tuple[str, str]]
    """(header, its short form) of each column."""
    left: set[str] = dataclasses.field(default_factory=set)
    """The headers of the columns aligned left (the others, figures, right)."""
    caption: str = ""
    rows: list[list[str]] = dataclasses.field(default_factory=list)

    def show(self, console: Console) -> None:
        """Print the table whole: with its headers, else its short headers in a lighter frame without the columns
        that are empty in every row, else one two-column table per row. Piped or logged, it keeps its figures
        whole at up to 160 columns rather than squeezing into 80."""
        console = console if console.is_terminal else Console(file=console.file, width=max(console.width, 160))
        kept = [i for i, _ in enumerate(self.columns) if any(row[i] != "-" for row in self.rows) or not self.rows]
        unbounded = console.options.update(max_width=10_000)
        for table in (self._table(range(len(self.columns)), short=False), self._table(kept, short=True)):
            if console.measure(table, options=unbounded).maximum <= console.width:  # the caption wraps
                table.caption = self.caption or None
                console.print(table)
                return
        for row in self.rows:
            stacked = Table(title=f"{self.title}\n{self.columns[0][0]} {row[0]}", show_header=False)
            for i in kept[1:]:
                stacked.add_row(self.columns[i][0], row[i])
            console.print(stacked)
        if self.caption:
            console.print(self.caption, style="dim")

    def _table(self, columns: Iterable[int], short: bool) -> Table:
        columns = list(columns)
        table = Table(title=self.title, box=box.SIMPLE_HEAD if short else box.HEAVY_HEAD,
                      pad_edge=not short, collapse_padding=short)
        for i in columns:
            header = self.columns[i][0]
            table.add_column(self.columns[i][short], justify="left" if header in self.left else "right", no_wrap=True)
        for row in self.rows:
            table.add_row(*(row[i] for i in columns))
        return table


def _existing(home: Optional[Path]) -> Home:
    """An existing home, for a command that does not read its settings: a broken dmn.toml is said on stderr
    all the same (the next night stops on it), and the command goes on."""
    root = Home.resolve(home, create=False)
    try:
        root.settings()
    except DmnError as exc:
        err.print(f"[yellow]warning:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    return root


@contextlib.contextmanager
def _needs(extra: str) -> Iterator[None]:
    """Around a command's imports: a package its extra brings, missing, is one line saying what to install."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "dmn").partition(".")[0] == "dmn":
            raise
        raise DmnError(f"this command needs the `{extra}` extra ({exc.name} is not installed): "
                       f"pip install 'dmn[{extra}]'") from None


def _imagined(cold: float | None, seeded: float | None) -> str:
    """Sequences per System 2 plan: cold, then (where any were) those started from System 1's proposal."""
    return (f"{cold:,.0f}" if cold else "-") + (f" / {seeded:,.0f}" if seeded else "")


def _figure(value: float | int | None) -> str:
    return "-" if value is None else str(value) if isinstance(value, int) else f"{value:.3f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}" if value < 1 else f"{value:.1f}"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _cell(value: Any) -> str:
    if value is None:
        return "[dim]NULL[/]"
    if isinstance(value, list) and len(value) > 6:
        head = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value[:4])
        return escape(f"[{head}, … ({len(value)})]")
    if isinstance(value, float):
        return f"{value:.6g}"
    return escape(str(value))


def main() -> None:
    try:
        app()
    except DmnError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None
