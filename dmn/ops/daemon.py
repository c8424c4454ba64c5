"""The nightly job as a daemon: consolidate on a schedule, and when the agents rest.

    >>> serve(Home.resolve(), load(Path("jobs/nightly.toml")))  # doctest: +SKIP

APScheduler 3 runs the job (`dmn.ops.jobs`; by default, ingest and consolidate) on a cron or interval trigger
(missed runs coalesce into one, never two at once), and, with `idle_after`, also once no new logs
have reached the inbox for that long. One daemon per home: a second one finds the home's daemon lock held and stops with `Busy`. A night that
finds a manual `dmn consolidate` running is skipped and logged; a night that fails is logged (and
recorded by `consolidate`), and the schedule goes on. SIGTERM or SIGINT stops the daemon: a night in
progress is cut where it stands, which leaves nothing half-done behind (bundles are published by an
atomic rename, ingest batches are committed by one), and the next run finishes the work.
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


def serve(home: Home, job: Job | None = None, *, interval: float | None = None,
          metrics_port: int | None = None) -> None:
    """Run until SIGTERM/SIGINT: the job (default `nightly()`) on its cron schedule (or every `interval`
    seconds), and once the inbox has been quiet for its `idle_after` seconds after new logs arrived."""
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
            night = _Night(home, job, metrics)
            scheduler.add_job(night, trigger, id="night", coalesce=True, max_instances=1, misfire_grace_time=None)
            if idle_after:
                scheduler.add_job(_IdleWatch(home, idle_after, night), IntervalTrigger(seconds=min(idle_after, 5.0)),
                                  id="idle", coalesce=True, max_instances=1)

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

    def __init__(self, home: Home, job: Job, metrics: _Metrics | None):
        self.home, self.job, self.metrics = home, job, metrics
        self.running = False

    def __call__(self) -> None:
        started = time.time()
        self.running = True
        try:
            self._run(started)
        finally:
            self.running = False

    def _run(self, started: float) -> None:
        try:
            nights = run(self.home, self.job)
        except Busy as exc:
            log.warning("night skipped", extra={"fields": {"reason": str(exc)}})
            return
        except Exception as exc:  # noqa: BLE001 - a failed night must not stop the daemon
            log.error("night failed", extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
            if self.metrics:
                self.metrics.ran(self.home, started, ok=False, nights=[])
            return
        for n in nights:
            combined = n.metrics.get("combined", {})
            log.info("night", extra={"fields": {"world": n.world, "status": n.status, "version": n.version,
                                                "current": n.current, "reason": n.reason,
                                                "coverage": combined.get("coverage"),
                                                "precision": combined.get("precision")}})
        if self.metrics:
            self.metrics.ran(self.home, started, ok=all(n.status != "failed" for n in nights), nights=nights)


class _IdleWatch:
    """Runs the night once the inbox has had new logs and then none for `idle_after` seconds."""

    def __init__(self, home: Home, idle_after: float, night: _Night):
        self.home, self.idle_after, self.night = home, idle_after, night
        self.handled = 0.0  # newest inbox change already consolidated

    def __call__(self) -> None:
        newest = max((p.stat().st_mtime for p in self.home.inbox.rglob("*") if p.is_file()), default=0.0)
        if newest > self.handled and time.time() - newest >= self.idle_after:
            self.handled = newest
            log.info("agents idle", extra={"fields": {"quiet_seconds": round(time.time() - newest, 1)}})
            self.night()


class _Metrics:
    """Prometheus gauges about the last night, served on `port` with the home's pages (`_serve`)."""

    def __init__(self, home: Home, port: int):
        from prometheus_client import Gauge

        self.last_run = Gauge("dmn_last_run_timestamp_seconds", "When the last night ended (Unix seconds).")
        self.duration = Gauge("dmn_last_run_duration_seconds", "How long the last night took.")
        self.success = Gauge("dmn_last_run_success", "1 if the last night finished without a failure, else 0.")
        self.version = Gauge("dmn_bundle_version", "The published bundle's version number.", ["world"])
        self.coverage = Gauge("dmn_system1_coverage", "Held-out coverage of the published bundle.", ["world"])
        self.precision = Gauge("dmn_system1_precision", "Held-out precision of the published bundle.", ["world"])
        self.live = Gauge("dmn_system1_live_precision", "System 1's agreement with System 2 on audits.", ["world"])
        self.records = Gauge("dmn_lake_records", "Records ingested into the lake.", ["world", "kind"])
        self.quarantined = Gauge("dmn_quarantined_records", "Records in quarantine.", ["reason"])
        _serve(home, port)

    def ran(self, home: Home, started: float, ok: bool, nights: list) -> None:
        try:
            state = status(home)
        except DmnError as exc:  # the figures are a courtesy: a store that cannot be read now is logged
            log.warning("metrics not updated", extra={"fields": {"reason": str(exc)}})
            state = {"worlds": {}, "quarantined": {}}
        for world, w in state["worlds"].items():
            for kind, n in w["lake"].items():
                self.records.labels(world, kind).set(n)
        for reason, n in state["quarantined"].items():
            self.quarantined.labels(reason).set(n)
        self.last_run.set(time.time())
        self.duration.set(time.time() - started)
        self.success.set(1 if ok else 0)
        for n in nights:
            if n.status == "published":
                self.version.labels(n.world).set(int(n.version[1:]))
                self.coverage.labels(n.world).set(n.metrics["combined"]["coverage"])
                self.precision.labels(n.world).set(n.metrics["combined"]["precision"])
            if n.metrics.get("live", {}).get("precision") is not None:
                self.live.labels(n.world).set(n.metrics["live"]["precision"])


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
    from dmn.ops.report import report  # matplotlib: only when the page is asked for

    page = home.root / "report" / "index.html"
    changed = max((d.stat().st_mtime for d in (home.runs, home.catalog) if d.is_dir()), default=0.0)
    if not page.is_file() or page.stat().st_mtime < changed:
        page = report(home)
    return page.read_bytes()


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
    """The daemon's log (and the scheduler's warnings) to stderr, as JSON lines or plain lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if as_json else Plain())
    for name, level in (("dmn.daemon", logging.INFO), ("apscheduler", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
