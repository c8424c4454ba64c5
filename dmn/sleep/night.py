"""The night: turn the lake's System 2 deliberation into System 1 reflexes, and publish them if they are good.

For every world with new System 2 experience in the lake (its newest encoder; or the world named):

    select     the labelled steps of the last `window_days`, age-weighted (dmn.sleep.experience)
    split      by episode and time: train, validation, test (dmn.sleep.evaluate)
    cluster    training states into situations, FAISS k-means (dmn.sleep.cluster)
    outcomes   imagined consequences into outcome types, FAISS k-means
    table      per situation: what System 2 did, how surely, what it avoided, what it imagined (dmn.sleep.table)
    policy     a small network distilled from System 2's choices and scores, calibrated (dmn.sleep.train)
    evaluate   thresholds on validation for the precision target; coverage and precision on test
    gate       publish only if test precision meets the target and coverage holds up against the current bundle
    publish    a versioned bundle, switched in atomically (dmn.bundle.publish)

Every run, published or not, is recorded in `<home>/runs/` (`runs()`; the `consolidations` view); a week on, in
its month's file there.
What is in the inbox is not read here: the nightly job ingests first (`dmn.ops.jobs.nightly`).
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dmn import faults
from dmn.bundle import publish
from dmn.bundle.decide import Answers, Rule, table_columns
from dmn.bundle.diff import diff
from dmn.bundle.load import Bundle, from_files, load
from dmn.cluster import connected, engine_kind
from dmn.config import ConsolidateSettings, EngineSettings
from dmn.errors import DmnError
from dmn.home import Home, write_atomic
from dmn.lake.store import Store
from dmn.progress import Progress, quiet
from dmn.sleep.cluster import outcome_types, situation_count, situation_index
from dmn.sleep.evaluate import curve, metrics, split, thresholds, wilson_lower
from dmn.sleep.experience import Experience, Window, pairs
from dmn.sleep.states import answers, situations
from dmn.sleep.table import candidate_table, heuristic_table, outcome_table
from dmn.version import __version__

RUNS_ARCHIVED_AFTER_DAYS = 7
"""A run record older than this leaves its own file for its month's (`run_files`)."""


@dataclass
class Consolidation:
    """What one night did for one world."""

    world: str
    encoder: str
    status: str
    """published; kept (the gate refused the new bundle, the current one serves on); demoted (the gate refused
    it, and the current one, failing live, is published again with the situations it failed in demoted);
    refused (the gate refused it, and no bundle serves); nothing new; or failed. A dry run publishes nothing
    and says what the night would have done: would publish, would keep, would demote, would refuse."""
    reason: str = ""
    version: str | None = None
    """The bundle published now (None when nothing was published)."""
    current: str | None = None
    """The bundle readers load after this run."""
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started_at: str = ""
    ended_at: str = ""
    watermark: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    """Each stage's; and "mapped", the part of them spent on what is computed for every state (the situation
    of each, System 1's answers), which the Ray engine runs as tasks (`dmn.sleep.states`)."""
    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def consolidate(home: Home, world: str | None = None, *, settings: ConsolidateSettings | None = None,
                now: float | None = None, on_progress: Progress | None = None,
                wait: float = 0.0, dry_run: bool = False, engine: str | None = None) -> list[Consolidation]:
    """Consolidate every world with new System 2 experience in the lake (or `world`). `engine`: "local" or
    "ray" (default: the settings' `[engine] kind`); with Ray, tasks on the cluster read the window, keep its
    states and compute what is computed for every one of them, and type its imagined consequences, while this
    process fits on bounded samples (`dmn.sleep.distributed`): the bundle is the one the local engine makes.

    Raises `Busy` if another consolidation still holds the home after `wait` seconds. A `dry_run` does the
    whole night but publishes nothing and records no run: each world's result says what the gate would
    decide, and its `metrics["diff"]` what would change against the current bundle (`dmn.bundle.diff`).

    >>> for night in consolidate(Home.resolve()):  # doctest: +SKIP
    ...     print(night.world, night.status, night.version)
    """
    settings = settings or home.settings().consolidate
    cluster = home.settings().engine
    kind = engine_kind(engine, cluster)
    say = on_progress or quiet
    with home.lock("consolidate", wait=wait), _windows(kind, cluster, say) as windows:
        store = Store(home)
        found = pairs(store)
        if world is not None:
            found = [p for p in found if p[0] == world]
            if not found:
                raise DmnError(f"no decisions for world {world!r} in the store")
        nights, seen = [], set()
        for w, encoder, watermark in found:
            if w in seen:
                continue  # an older encoder of a world: its latents are not the ones agents now send
            seen.add(w)
            nights.append(_night(home, store, w, encoder, watermark, settings, now, say, dry_run, windows))
        if not dry_run:
            try:
                _archive_runs(home, time.time() if now is None else now)
            except OSError as exc:
                raise DmnError(f"the nights are recorded, but archiving old run records into {home.runs} failed "
                               f"({exc.strerror or exc}); the next night tries again") from None
        return nights


@contextmanager
def _windows(kind: str, engine: EngineSettings, say: Progress) -> Iterator[Windows]:
    """How the nights read their worlds' windows: in this process (`Window`), or by tasks on the Ray cluster,
    connected for as long as the nights run (a cluster that cannot be reached: DmnError, before any night)."""
    if kind == "local":
        yield Window
        return
    from dmn.sleep import distributed  # Ray is an extra: imported only to use it

    with connected(engine) as ray:
        yield partial(distributed.Window, ray, engine, say)


Windows = Callable[[Store, str, str, ConsolidateSettings, "float | None"], Window]
"""`Window`'s signature: how a night opens its world's window."""


def _night(home: Home, store: Store, world: str, encoder: str, watermark: str, settings: ConsolidateSettings,
           now: float | None, say: Progress, dry_run: bool, windows: Windows) -> Consolidation:
    night = Consolidation(world, encoder, "failed", started_at=_iso(), watermark=watermark,
                          current=publish.current(home, world))
    last = _last_run(home, world)
    if last and last["watermark"] == watermark and last["encoder"] == encoder and last["status"] != "failed":
        night.status, night.reason = "nothing new", f"no new System 2 experience since run {last['run_id']}"
    else:
        try:
            _consolidate(home, store, night, settings, now, say, dry_run, windows)
        except (DmnError, ValueError) as exc:
            night.reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - recorded, and the other worlds still get their night
            night.reason = f"{type(exc).__name__}: {exc}"
    night.ended_at = _iso()
    outcome = (f"{world}: {night.status}{' ' + night.version if night.version else ''}"
               f"{' (' + night.reason + ')' if night.reason else ''}")
    if dry_run:
        say(outcome)
        return night
    try:
        home.runs.mkdir(exist_ok=True)
        write_atomic(home.runs / f"{night.started_at[:19].replace(':', '')}-{night.run_id}.json",
                     json.dumps(night.to_dict(), indent=1).encode())
    except (OSError, DmnError) as exc:  # say what the night did all the same: the record is not the news
        raise DmnError(f"{outcome}; but its run record could not be written "
                       f"({exc.strerror if isinstance(exc, OSError) else exc}), so the next night does it again") from None
    faults.point("consolidate.recorded")
    say(outcome)
    return night


def _consolidate(home: Home, store: Store, night: Consolidation, s: ConsolidateSettings, now: float | None,
                 say: Progress, dry_run: bool, windows: Windows) -> None:
    clock = _Clock(night.seconds)
    say(f"{night.world}: selecting experience", done=0, total=4)  # of the night's four long stages
    window = windows(store, night.world, night.encoder, s, now)
    exp = window.experience()
    parts = split(exp, s)
    clock.lap("select")
    train, val, test = parts.train, parts.validation, parts.test
    night.counts = {"steps": len(exp.label), "simulations": len(exp.sim_step), "train": len(train),
                    "validation": len(val), "test": len(test), "episodes": len(set(exp.episode))}

    say(f"{night.world}: clustering {len(train):,} states", done=1, total=4)
    k = s.situations or situation_count(len(train))
    index = situation_index(exp.states, train, k, exp.weight, s.pca_dims, s.seed)
    cluster, distance = exp.states.map(situations, train, index)
    clock.lap("cluster")

    outcome_index, outcome = outcome_types(window, exp, s.outcome_types, s.seed)
    clock.lap("outcomes")

    table = heuristic_table(exp, train, cluster, distance, index.ntotal, outcome, max(outcome_index.ntotal, 1), s)
    outcomes = outcome_table(exp, outcome, max(outcome_index.ntotal, 1))
    clock.lap("table")

    say(f"{night.world}: distilling the policy", done=2, total=4)
    near, away = exp.states.map(situations, val, index)
    far = away / np.maximum(table["radius"].to_numpy()[near], 1e-12)  # in novelty radii
    # Imported here: torch is paid for by the nights that train, not by every process that reads runs.
    from dmn.sleep.train import train_policy

    weights = train_policy(exp, train, val, far, s)
    clock.lap("policy")

    say(f"{night.world}: evaluating on {len(test):,} held-out steps", done=3, total=4)
    columns = table_columns(table, exp.actions)

    def system1(rows: np.ndarray, table: float, policy: float) -> Answers:  # the decision rule at these thresholds
        return answers(exp.states, rows, Rule.prepare(index, columns, weights, {"table": table, "policy": policy},
                                                      s.min_support, s.policy_reach))

    # Thresholds and figures count each held-out step for the steps of the agent's life it stands for.
    t_table, t_policy = thresholds(system1(val, -np.inf, np.inf), system1(val, np.inf, -np.inf),
                                   exp, val, s.precision_target, s.precision_z, s.min_confidence)
    judge = partial(metrics, exp=exp, rows=test)
    serving = _serving(home, night)
    night.metrics = {
        "combined": judge(system1(test, t_table, t_policy)),
        "table": judge(system1(test, t_table, np.inf)),
        "policy": judge(system1(test, np.inf, t_policy)),
        "thresholds": {"table": _finite(t_table), "policy": _finite(t_policy)},
        # The trade-off the policy's threshold picks from, on test.
        "curve": curve(system1(test, t_table, -np.inf), exp, test),
        "situations": int(index.ntotal), "outcome_types": int(outcome_index.ntotal), "live": _live(exp),
        "published": _published_on(serving, night, exp, test, s),
    }
    clock.lap("evaluate")
    night.seconds["mapped"] = round(exp.states.mapped, 3)

    files, manifest = _candidate(night, exp, index, table, outcome_index, outcomes, weights, train, cluster, outcome, s)
    reason = _gate(night, s)
    failing = bool((night.metrics["published"] or {}).get("failing"))
    if dry_run:
        _preview(serving, night, files, manifest, reason, failing)
        return
    if reason and failing:
        live = night.metrics["published"]["live"]
        night.version, demoted = _demote(home, night, serving, exp, s)
        night.current, night.status = night.version, "demoted"
        night.reason = (f"{reason}; and {night.metrics['published']['version']} failed live (precision "
                        f"{live['precision']:.3f} on {live['audited']} audits): published again as {night.version} "
                        f"with the {demoted} situations where it fell short demoted")
        clock.lap("publish")
        return
    if reason:
        night.status, night.reason = ("kept" if night.current else "refused"), reason
        return
    night.reason = _replaces(night, s)
    night.version = publish.publish(home, night.world, files, manifest, s.keep)
    night.current, night.status = night.version, "published"
    clock.lap("publish")


def _candidate(night: Consolidation, exp: Experience, index: faiss.Index, table: pa.Table, outcome_index: faiss.Index,
               outcomes: pa.Table, weights: dict[str, np.ndarray], train: np.ndarray, cluster: np.ndarray,
               outcome: np.ndarray, s: ConsolidateSettings) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The files and manifest of the bundle this night made, as `publish.publish` takes them."""
    files = {
        "table.parquet": _parquet(table), "outcomes.parquet": _parquet(outcomes),
        "situations.faiss": faiss.serialize_index(index).tobytes(),
        "outcomes.faiss": faiss.serialize_index(outcome_index).tobytes(),
        "policy.npz": _npz(weights),
    }
    if exp.action_dim:
        files["candidates.parquet"] = _parquet(candidate_table(exp, train, cluster, outcome))
    manifest = {
        "encoder": night.encoder, "dim": exp.dim, "actions": exp.actions, "created_at": _iso(),
        "code_version": __version__, "run_id": night.run_id, "min_support": s.min_support,
        "policy_reach": s.policy_reach, "stake": exp.stake, "score_tolerance": s.score_tolerance,
        "action_dim": exp.action_dim,
        **({"action_low": exp.low.tolist(), "action_high": exp.high.tolist(),
            "action_tolerance": s.action_tolerance} if exp.action_dim else {}),
        "thresholds": night.metrics["thresholds"], "metrics": {k: night.metrics[k] for k in
                                                               ("combined", "table", "policy", "curve")},
        "window": {"from": _iso(float(exp.ts.min())), "to": _iso(float(exp.ts.max())), "steps": len(exp.label)},
        "settings": asdict(s),
    }
    return files, manifest


def _preview(serving: Bundle | None, night: Consolidation, files: dict[str, bytes], manifest: dict[str, Any],
             reason: str, failing: bool) -> None:
    """A dry run's result: what the gate would decide, and what the new bundle would change against the current one."""
    if not reason:
        night.status = "would publish"
    elif failing:
        night.status = "would demote"
        reason += f"; and {night.current} is failing live: its failing situations would be demoted"
    else:
        night.status = "would keep" if night.current else "would refuse"
    night.reason = reason
    candidate = from_files({**manifest, "world": night.world, "version": "(dry run)"}, files)
    night.metrics["diff"] = diff(serving, candidate).to_dict()  # no bundle, or a damaged one: all of it is new


def _gate(night: Consolidation, s: ConsolidateSettings) -> str:
    """Why the new bundle must not replace the current one ("" when it may). The published bundle's
    coverage is the standard only while it is precise enough, on the same held-out steps and live: once its
    audits since it was published were acceptable less often than the target, a new bundle that meets the
    target replaces it whatever its coverage (whether or not the shortfall is more than chance: `failing`,
    which demotes its situations when no new bundle meets the target)."""
    combined, published = night.metrics["combined"], night.metrics["published"]
    if combined["precision"] is None:
        return "System 1 would answer none of the held-out decisions at the precision target"
    if combined["precision"] < s.precision_target:
        return f"test precision {combined['precision']:.3f} is below the target {s.precision_target}"
    live = (published or {}).get("live") or {}
    if (published and (published["precision"] or 0) >= s.precision_target and not published["failing"]
            and (live.get("precision") is None or live["precision"] >= s.precision_target)
            and combined["coverage"] < published["coverage"] - s.coverage_tolerance):
        return (f"test coverage {combined['coverage']:.3f} is worse than the published {published['version']}'s "
                f"{published['coverage']:.3f} on the same held-out steps by more than {s.coverage_tolerance}")
    return ""


def _replaces(night: Consolidation, s: ConsolidateSettings) -> str:
    """Why a new bundle replaces the serving one, when that one fell short of the target live (`failing`:
    by more than chance); "" otherwise."""
    published = night.metrics["published"] or {}
    live = published.get("live") or {}
    if not live.get("audited") or live["precision"] >= s.precision_target:
        return ""
    return (f"replaces {published['version']}, which {'failed' if published['failing'] else 'fell short'} live: "
            f"precision {live['precision']:.3f} on {live['audited']} audits, below the target {s.precision_target}")


def _serving(home: Home, night: Consolidation) -> Bundle | None:
    """The bundle that serves the world as the night starts (None when there is none, or it is damaged)."""
    try:
        return load(home, night.world, night.current) if night.current else None
    except DmnError:
        return None


def _published_on(bundle: Bundle | None, night: Consolidation, exp: Experience, rows: np.ndarray,
                  s: ConsolidateSettings) -> dict[str, Any] | None:
    """How the published `bundle` does on the new held-out steps, and live since it was published: the
    standard a new bundle is held to (None when there is none for this encoder, or it is damaged).

    It is failing when its live precision is below the target by more than chance: the Wilson bound
    `precision_z` standard errors up is below it."""
    if bundle is None or bundle.manifest["encoder"] != night.encoder or bundle.manifest["dim"] != exp.dim:
        return None
    said = answers(exp.states, rows, bundle.rule)
    if not exp.action_dim:  # the bundle's action indices, in this night's vocabulary
        position = {a: i for i, a in enumerate(exp.actions)}
        said.action = np.array([position.get(a, -1) for a in bundle.actions])[said.action]
    figures = metrics(said, exp, rows)
    live = _live(exp, since=_published_at(bundle))
    failing = bool(live["audited"]) and bool(1 - wilson_lower(1 - live["precision"], live["audited"], s.precision_z)
                                             < s.precision_target)
    return {"version": night.current, "coverage": figures["coverage"], "precision": figures["precision"],
            "exact_precision": figures.get("exact_precision"), "live": live, "failing": failing}


def _demote(home: Home, night: Consolidation, bundle: Bundle, exp: Experience, s: ConsolidateSettings
            ) -> tuple[str, int]:
    """Publish the current `bundle` again with the situations it failed in live demoted: those whose audits
    since it was published were acceptable less often than the precision target. Returns the new version
    and how many situations it demoted."""
    audited = _audits(exp, since=_published_at(bundle))
    situation = exp.states.map(situations, audited, bundle.index)[0]
    right = exp.right(exp.reflexes(audited), audited)
    k = bundle.index.ntotal
    audits, agreed = np.bincount(situation, minlength=k), np.bincount(situation[right], minlength=k)
    failed = (audits > 0) & (agreed < s.precision_target * audits)
    before = bundle.table["demoted"].to_numpy(zero_copy_only=False).astype(bool)
    table = bundle.table.set_column(bundle.table.schema.get_field_index("demoted"), "demoted", pa.array(before | failed))
    folder = publish.folder(home, night.world) / night.current
    files = {name: (folder / name).read_bytes() for name in bundle.manifest["files"]}
    files["table.parquet"] = _parquet(table)
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("files", "version", "format", "world", "signature")}
    manifest.update(created_at=_iso(), run_id=night.run_id, demoted_from=night.current)
    return publish.publish(home, night.world, files, manifest, s.keep), int((failed & ~before).sum())


def _live(exp: Experience, since: float = -np.inf) -> dict[str, Any]:
    """How System 1 did in the world (since `since`, Unix seconds): on the steps that audited it, how often
    its answer was right (precision) and System 2's own choice (exact precision: None for vector actions)."""
    audited = _audits(exp, since)
    if not len(audited):
        return {"audited": 0, "precision": None, "exact_precision": None}
    return {"audited": len(audited), "precision": float(exp.right(exp.reflexes(audited), audited).mean()),
            "exact_precision": None if exp.action_dim else float((exp.reflex[audited] == exp.label[audited]).mean())}


def _audits(exp: Experience, since: float = -np.inf) -> np.ndarray:
    """The steps that audited System 1 (System 2 decided, and logged System 1's withheld answer) since `since`."""
    return np.flatnonzero((exp.reflex >= 0) & (exp.ts >= since))


def _published_at(bundle: Bundle) -> float:
    """When `bundle` was published, in Unix seconds: what it did live is what came after."""
    return datetime.fromisoformat(bundle.manifest["created_at"]).timestamp()


def runs(home: Home) -> list[dict[str, Any]]:
    """Every recorded night, oldest first; unreadable records are skipped."""
    return list(_run_records(home))


def run_files(home: Home) -> tuple[list[Path], list[Path]]:
    """The files that hold the run records, oldest first: one per recent night (`<start>-<run id>.json`), and one
    per month of older ones (`<YYYY-MM>.jsonl`, a record a line, `_archive_runs`). A record cut between the two
    by a crash is in both: readers keep one per run id."""
    if not home.runs.is_dir():
        return [], []
    names = sorted(os.listdir(home.runs))
    return ([home.runs / n for n in names if n.endswith(".json") and not n.startswith(".")],
            [home.runs / n for n in names if n.endswith(".jsonl") and not n.startswith(".")])


def _run_records(home: Home, newest_first: bool = False) -> Iterator[dict[str, Any]]:
    """The run records in the order of their starts (which the names start with), each run once."""
    recent, months = run_files(home)
    seen: set[str] = set()
    for path in [*recent[::-1], *months[::-1]] if newest_first else [*months, *recent]:
        try:
            lines = path.read_bytes().splitlines() if path.suffix == ".jsonl" else [path.read_bytes()]
        except OSError:
            continue
        for line in lines[::-1] if newest_first else lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("run_id") not in seen:
                seen.add(record.get("run_id"))
                yield record


def _archive_runs(home: Home, now: float) -> None:
    """Move the records of nights that started over `RUNS_ARCHIVED_AFTER_DAYS` ago into their month's file, so
    that a year of nights is a dozen files to read rather than hundreds. Appends by rewriting the month's file
    atomically, then deletes the records it now holds: a crash between leaves a record in both, never in none."""
    cutoff = _iso(now - RUNS_ARCHIVED_AFTER_DAYS * 86400)[:19].replace(":", "")  # as the record names begin
    old = [p for p in run_files(home)[0] if p.name[:len(cutoff)] < cutoff]
    for month in sorted({p.name[:7] for p in old}):
        path = home.runs / f"{month}.jsonl"
        archived = path.read_bytes() if path.exists() else b""
        have = {json.loads(line).get("run_id") for line in archived.splitlines() if line.strip()}
        moved = [p for p in old if p.name[:7] == month]
        lines = []
        for p in moved:
            try:
                record = json.loads(p.read_bytes())
            except ValueError:  # unreadable: readers skip it, and so does the archive
                continue
            if record.get("run_id") not in have:
                lines.append(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        if lines:
            write_atomic(path, archived + (b"" if not archived or archived.endswith(b"\n") else b"\n") + b"".join(lines))
        for p in moved:
            p.unlink(missing_ok=True)


def _last_run(home: Home, world: str) -> dict[str, Any] | None:
    """The world's newest run record, read from the newest back rather than all of them."""
    return next((r for r in _run_records(home, newest_first=True) if r.get("world") == world), None)


class _Clock:
    def __init__(self, into: dict[str, float]):
        self.into, self.last = into, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.into[stage] = round(now - self.last, 3)
        self.last = now
        faults.point(f"consolidate.{stage}")  # a stage ended


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    sink = io.BytesIO()
    np.savez(sink, **arrays)
    return sink.getvalue()


def _finite(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def _iso(seconds: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if seconds is None else seconds, timezone.utc).isoformat()
