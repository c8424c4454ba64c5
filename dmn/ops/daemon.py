"""The nightly job as a daemon: consolidate on a schedule, and when the agents rest.

    >>> serve(Home.resolve(), load(Path("jobs/nightly.toml")))  # doctest: +SKIP

APScheduler 3 runs the job (`dmn.ops.jobs`; by default, ingest and consolidate) on a cron or interval trigger
(missed runs coalesce into one, never two at once), and, with `idle_after`, also once no new logs
have reached the inbox for that long. One daemon per home: a second one finds the home's daemon lock held and stops with `Busy`. A night that
finds a manual `dmn consolidate` running is skipped and logged; a night that fails is logged (and
recorded by `consolidate`), and the schedule goes on. SIGTERM or SIGINT stops the daemon: a night in
progress is cut where it stands, which leaves nothing half-done behind (bundles are published by an
atomic rename, ingest batches are committed by one), and the next run finishes the work. Its scheduler
touches a heartbeat every few seconds, night or not (`alive`, the container's healthcheck), and with a
port it serves the home's gauges, report and status (`_Metrics`, `_serve`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from dmn.errors import Busy, DmnError
from dmn.home import Home
from dmn.ops.jobs import Job, nightly, run
from dmn.ops.status import status

log = logging.getLogger("dmn.daemon")

HEARTBEAT = "daemon.heartbeat"
"""The file in `<home>/locks/` the daemon's scheduler touches every `HEARTBEAT_SECONDS`, night or not."""
HEARTBEAT_SECONDS = 5.0
GAUGES_SECONDS = 60.0
"""How often the gauges are read again from the home, for the nights other processes ran."""


def alive(home: Home, within: float = 30.0) -> float:
    """Seconds since the home's daemon last beat; raises DmnError when it has not within `within` seconds
    (frozen, dead, or never started): what a container's healthcheck asks.

    >>> alive(Home.resolve())  # doctest: +SKIP
    2.1
    """
    try:
        ago = time.time() - (home.locks / HEARTBEAT).stat().st_mtime
    except FileNotFoundError:
        raise DmnError(f"no dmn daemon has run on {home.root} (no heartbeat in {home.locks})") from None
    if ago > within:
        raise DmnError(f"the dmn daemon of {home.root} last beat {ago:.0f} s ago (more than {within:g} s): "
                       "frozen or gone")
    return ago


def serve(home: Home, job: Job | None = None, *, interval: float | None = None,
          metrics_port: int | None = None, engine: str | None = None) -> None:
    """Run until SIGTERM/SIGINT: the job (default `nightly()`) on its cron schedule (or every `interval`
    seconds), and once the inbox has been quiet for its `idle_after` seconds after new logs arrived.
    `engine` runs its ingest and consolidate stages ("local" or "ray"; default: the settings')."""
    job = job or nightly()
    idle_after, cron = job.schedule.idle_after, job.schedule.cron
    if interval is not None and interval <= 0:
        raise DmnError(f"--interval must be a positive number of seconds, got {interval:g}")
    try:
        trigger = IntervalTrigger(seconds=interval) if interval else CronTrigger.from_crontab(cron)
    except ValueError as exc:
        raise DmnError(f"cron {cron!r} is not a 5-field cron expression ({exc})") from None
    metrics = _Metrics(home, metrics_port) if metrics_port else None
    try:
        with home.lock("daemon"):
            scheduler = BlockingScheduler()
            night = _Night(home, job, metrics, engine)
            scheduler.add_job(night, trigger, id="night", coalesce=True, max_instances=1, misfire_grace_time=None)
            if idle_after:
                scheduler.add_job(_IdleWatch(home, idle_after, night, scheduler), IntervalTrigger(
                    seconds=min(idle_after, 5.0)), id="idle", coalesce=True, max_instances=1)
            scheduler.add_job((home.locks / HEARTBEAT).touch, IntervalTrigger(seconds=HEARTBEAT_SECONDS), id="heartbeat",
                              next_run_time=datetime.now(timezone.utc), coalesce=True, max_instances=1)
            if metrics:  # what the home says, whoever ran its nights: now, after each job, and every minute
                metrics.refresh()
                scheduler.add_job(metrics.refresh, IntervalTrigger(seconds=GAUGES_SECONDS), id="gauges", coalesce=True,
                                  max_instances=1)

            def stop(signum: int, _frame: Any) -> None:
                log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}})
                scheduler.shutdown(wait=False)

            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
            log.info("started", extra={"fields": {"home": str(home.root), "job": job.name, "trigger": str(trigger),
                                                  "idle_after": idle_after or None, "metrics_port": metrics_port}})
            scheduler.start()
            if night.running:  # cut it: a worker thread would otherwise hold the exit until the night ends
                log.info("stopped; the night in progress is cut, and the next run finishes its work")
                logging.shutdown()
                os._exit(0)
    except Busy:
        raise Busy(f"another dmn daemon is running on {home.root}") from None
    log.info("stopped")


class _Night:
    """One run of the job, logged; never raises, so the schedule survives it."""

    def __init__(self, home: Home, job: Job, metrics: _Metrics | None, engine: str | None):
        self.home, self.job, self.metrics, self.engine = home, job, metrics, engine
        self.running = False

    def __call__(self) -> None:
        self.running = True
        try:
            self._run()
        finally:
            self.running = False

    def _run(self) -> None:
        try:
            nights = run(self.home, self.job, engine=self.engine)
        except Busy as exc:
            log.warning("night skipped", extra={"fields": {"reason": str(exc)}})
            return
        except Exception as exc:  # noqa: BLE001 - a failed night must not stop the daemon
            log.error("night failed", extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
            if self.metrics:
                self.metrics.job_errors.inc()
                self.metrics.refresh()
            return
        for n in nights:
            combined = n.metrics.get("combined", {})
            log.info("night", extra={"fields": {"world": n.world, "status": n.status, "version": n.version,
                                                "current": n.current, "reason": n.reason,
                                                "coverage": combined.get("coverage"),
                                                "precision": combined.get("precision")}})
        if self.metrics:
            self.metrics.refresh()


class _IdleWatch:
    """Starts the night once the inbox has had new logs and then none for `idle_after` seconds: it asks the
    scheduler to run the night job now, so that its own runs stay short (and never pile up behind a night)."""

    def __init__(self, home: Home, idle_after: float, night: _Night, scheduler: BlockingScheduler):
        self.home, self.idle_after, self.night, self.scheduler = home, idle_after, night, scheduler
        self.handled = 0.0  # newest inbox change already consolidated

    def __call__(self) -> None:
        if self.night.running:
            return
        newest = max((p.stat().st_mtime for p in self.home.inbox.rglob("*") if p.is_file()), default=0.0)
        if newest > self.handled and time.time() - newest >= self.idle_after:
            self.handled = newest
            log.info("agents idle", extra={"fields": {"quiet_seconds": round(time.time() - newest, 1)}})
            self.scheduler.modify_job("night", next_run_time=datetime.now(timezone.utc))


class _Metrics:
    """Prometheus gauges of the home as it is, read from the home itself (its run records, bundles, lake and
    inbox) when the daemon starts and after every job, whoever ran the nights; served on `port` (`_serve`)."""

    def __init__(self, home: Home, port: int):
        from prometheus_client import Counter, Gauge

        self.home, world = home, ["world"]
        self.night_end = Gauge("dmn_last_night_end_timestamp_seconds", "When the world's last night ended.", world)
        self.night_duration = Gauge("dmn_last_night_duration_seconds", "How long the world's last night took.", world)
        self.night_ok = Gauge("dmn_last_night_success", "1 unless the world's last night failed.", world)
        self.version = Gauge("dmn_bundle_version", "The number of the bundle System 1 serves.", world)
        self.created = Gauge("dmn_bundle_created_timestamp_seconds", "When the bundle System 1 serves was published.",
                             world)
        self.coverage = Gauge("dmn_system1_heldout_coverage_ratio", "Held-out coverage of the served bundle.", world)
        self.precision = Gauge("dmn_system1_heldout_precision_ratio", "Held-out precision of the served bundle.", world)
        self.live = Gauge("dmn_system1_live_precision_ratio", "System 1's answers as good as System 2's on the "
                          "last audits.", world)
        self.records = Gauge("dmn_lake_records", "Records in the lake.", ["world", "kind"])
        self.quarantined = Gauge("dmn_quarantined_records", "Records in quarantine.", ["reason"])
        self.backlog = Gauge("dmn_inbox_backlog_bytes", "Bytes in the inbox no batch has ingested yet.")
        self.backlog_files = Gauge("dmn_inbox_backlog_files", "Inbox files with bytes no batch has ingested yet.")
        self.job_errors = Counter("dmn_daemon_job_errors", "Jobs of this daemon that stopped on an error.")
        self.read_at = Gauge("dmn_metrics_read_timestamp_seconds", "When these figures were read from the home.")
        _serve(home, port)

    def refresh(self) -> None:
        try:
            state = status(self.home)
        except DmnError as exc:  # the figures are a courtesy: a store that cannot be read now is logged
            log.warning("metrics not updated", extra={"fields": {"reason": str(exc)}})
            return
        for world, w in state["worlds"].items():
            for kind, n in w["lake"].items():
                self.records.labels(world, kind).set(n)
            if night := w["last_night"]:
                self.night_end.labels(world).set(_seconds(night["ended_at"]))
                self.night_duration.labels(world).set(night["duration_seconds"])
                self.night_ok.labels(world).set(0 if night["status"] == "failed" else 1)
                if night["live_precision"] is not None:
                    self.live.labels(world).set(night["live_precision"])
            if bundle := w["bundle"]:
                self.version.labels(world).set(int(bundle["version"][1:]))
                self.created.labels(world).set(_seconds(bundle["created_at"]))
                for gauge, key in ((self.coverage, "coverage"), (self.precision, "precision")):
                    if bundle[key] is not None:
                        gauge.labels(world).set(bundle[key])
        for reason, n in state["quarantined"].items():
            self.quarantined.labels(reason).set(n)
        self.backlog.set(state["inbox"]["bytes"])
        self.backlog_files.set(state["inbox"]["files"])
        self.read_at.set(time.time())


def _seconds(utc: str) -> float:
    """`dmn status`'s UTC time (2026-12-01T03:00:12Z) in Unix seconds."""
    return datetime.strptime(utc, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def _serve(home: Home, port: int) -> None:
    """Serve, on every interface at `port`, from a thread: Prometheus metrics at /metrics, the latest report at /
    (written again when a night or an ingest came after it), and `dmn status --json` at /status: one address
    for a person and for a scraper."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    writing = threading.Lock()

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = urlsplit(self.path).path
            try:
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest())
                elif path == "/status":
                    self._send(200, "application/json", json.dumps(status(home), default=str).encode())
                elif path in ("/", "/index.html"):
                    with writing:
                        page = _latest_report(home)
                    self._send(200, "text/html; charset=utf-8", page)
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found: /, /status and /metrics are served\n")
            except DmnError as exc:
                self._send(503, "text/plain; charset=utf-8", f"{exc}\n".encode())

        def _send(self, code: int, kind: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the daemon logs its nights, not its requests
            pass

    try:
        server = ThreadingHTTPServer(("", port), Pages)
    except OSError as exc:
        raise DmnError(f"cannot serve on port {port}: {exc.strerror}") from None
    threading.Thread(target=server.serve_forever, name="dmn-pages", daemon=True).start()


def _latest_report(home: Home) -> bytes:
    """The home's report page, written again first when a night or an ingest came after it (`dmn.ops.report`)."""
    from dmn.ops import report  # matplotlib: only when the page is asked for

    written = report.home_page(home)
    changed = max((d.stat().st_mtime for d in (home.runs, home.catalog) if d.is_dir()), default=0.0)
    if not written.is_file() or written.stat().st_mtime < changed:
        written = report.report(home)
    return written.read_bytes()


class JsonLines(logging.Formatter):
    """One JSON object per log line: time, level, message and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
                           "level": record.levelname.lower(), "message": record.getMessage(),
                           **getattr(record, "fields", {})}, default=str)


class Plain(logging.Formatter):
    """`time level message key=value ...` for people reading stderr."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in getattr(record, "fields", {}).items() if v is not None)
        stamp = datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S")
        return f"{stamp} {record.levelname.lower():7} {record.getMessage()}" + (f"  {fields}" if fields else "")


def log_to_stderr(as_json: bool) -> None:
    """The daemon's log (and the scheduler's warnings) to stderr, as JSON lines or plain lines. A tick of the
    schedule that finds the night still running is absorbed by it (the jobs coalesce): not worth a line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if as_json else Plain())
    handler.addFilter(lambda record: "maximum number of running instances reached" not in record.getMessage())
    for name, level in (("dmn.daemon", logging.INFO), ("apscheduler", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
