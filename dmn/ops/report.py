"""What the agents learned, as one HTML page with plots: for a lab meeting, or a morning coffee.

    >>> report(Home.resolve(), out=Path("dmn-report"))  # doctest: +SKIP
    PosixPath('dmn-report/index.html')

Per world: how much System 1 took over (its share and the System 2 calls, per day, or per ingest
batch when the logs span less than two days), the published bundle's coverage–precision trade-off on its held-out
steps, a map of its situations (PCA of the centroids, coloured by System 2's choice, sized by
support, avoid-lists and demotions marked), and the nights' stage timings; for the home, the
quarantine's reasons. Each plot is a PNG next to `index.html`, which embeds them, so the page can be
mailed alone.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from dmn.bundle import publish  # noqa: E402
from dmn.bundle.load import load  # noqa: E402
from dmn.errors import DmnError  # noqa: E402
from dmn.home import Home, write_atomic  # noqa: E402
from dmn.lake.duck import run  # noqa: E402
from dmn.ops.sql import store  # noqa: E402
from dmn.ops.status import status  # noqa: E402

STAGES = ("select", "cluster", "outcomes", "table", "policy", "evaluate", "publish")
SIZE = (6.4, 4.2)
"""Every plot's size in inches, so that the page's grid is even."""


def home_page(home: Home) -> Path:
    """Where the home's report is written unless told otherwise: `<home>/report/index.html`."""
    return home.root / "report" / "index.html"


def report(home: Home, world: str | None = None, out: Path | None = None) -> Path:
    """Write the report of `world` (default: every world) into `out` (default `<home>/report`); returns index.html."""
    state = status(home)
    worlds = [world] if world else list(state["worlds"])
    if world and world not in state["worlds"]:
        raise DmnError(f"no world {world!r} in {home.root}; known: {', '.join(state['worlds']) or 'none'}")
    out = Path(out) if out else home_page(home).parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DmnError(f"cannot write the report into {out}: {exc.strerror}") from None
    con = store(home).connect({"decisions", "consolidations"})  # the views its plots read, no more
    published = {m["world"]: m for m in publish.manifests(home) if m["current"]}
    sections = []
    for w in worlds:
        figures = [("days", _days(con, w)), ("curve", _curve(published.get(w))), ("map", _map(home, w)),
                   ("timings", _timings(con, w))]
        sections.append((w, state["worlds"][w], [(name, _save(fig, out / f"{_slug(w)}-{name}.png"))
                                                 for name, fig in figures if fig is not None]))
    quarantine = _quarantine(state["quarantined"])
    page = _page(home, sections, _save(quarantine, out / "quarantine.png") if quarantine else None)
    write_atomic(out / "index.html", page.encode())
    return out / "index.html"


# -- the plots -----------------------------------------------------------------------------------

def _days(con: Any, world: str) -> plt.Figure | None:
    """System 1's share of decisions and System 2's calls per day, or per ingest batch (between two
    nights) when the logs span less than two days."""
    span = run(con, "SELECT epoch(max(ts)) - epoch(min(ts)) FROM decisions WHERE world = ?", [world])[0][0]
    if span is None:
        return None
    daily = span >= 2 * 86400
    rows = run(con, f"""
        SELECT {"date_trunc('day', ts)::DATE::VARCHAR" if daily else "batch"} AS t,
               count(*) FILTER (WHERE source = 'system1') AS s1, count(*) FILTER (WHERE source = 'system2') AS s2
        FROM decisions WHERE world = ? GROUP BY 1 ORDER BY min(ts)""", [world])
    labels = [r[0] if daily else f"batch {i + 1}" for i, r in enumerate(rows)]
    s1, s2 = np.array([r[1] for r in rows], float), np.array([r[2] for r in rows], float)
    fig, ax = plt.subplots(figsize=SIZE)
    x = np.arange(len(rows))
    ax.bar(x, s2, color="#c44e52", alpha=0.8, label="System 2 calls")
    ax.set_ylabel("System 2 calls")
    ax.set_xticks(x, labels, rotation=45 if len(rows) > 8 else 0, ha="right" if len(rows) > 8 else "center",
                  fontsize=8)
    share = ax.twinx()
    share.plot(x, 100 * s1 / np.maximum(s1 + s2, 1), color="#4c72b0", marker="o", label="System 1 share")
    share.set_ylim(0, 100)
    share.set_ylabel("System 1 share of decisions (%)")
    ax.set_title(f"{world}: System 1 takes over (per {'day' if daily else 'ingest batch'})")
    _few(ax, len(rows))
    (bars, left), (line, right) = ax.get_legend_handles_labels(), share.get_legend_handles_labels()
    ax.legend(bars + line, left + right, fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return fig


def _curve(manifest: dict | None) -> plt.Figure | None:
    """The published bundle's coverage–precision trade-off on its held-out steps, and where it stands."""
    points = (manifest or {}).get("metrics", {}).get("curve")
    if not points:
        return None
    combined, target = manifest["metrics"]["combined"], manifest["settings"]["precision_target"]
    fig, ax = plt.subplots(figsize=SIZE)
    ax.plot([p["coverage"] for p in points], [p["precision"] for p in points], color="#4c72b0", marker=".",
            label="policy threshold swept (table as published)")
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"precision target {target}")
    if combined["precision"] is not None:
        ax.scatter([combined["coverage"]], [combined["precision"]], color="#c44e52", zorder=3,
                   label=f"published thresholds ({combined['coverage']:.2f}, {combined['precision']:.3f})")
    ax.set_xlabel("coverage (share of held-out decisions answered)")
    ax.set_ylabel("precision (agreement with System 2)")
    ax.set_xlim(0, 1.02)
    ax.set_title(f"{manifest['world']} {manifest['version']}: coverage vs precision")
    ax.legend(fontsize=8, loc="lower left")
    return fig


def _map(home: Home, world: str) -> plt.Figure | None:
    """The situations in 2-D (PCA of the centroids): colour = System 2's choice, size = support."""
    try:
        bundle = load(home, world)
    except DmnError:
        return None
    k = bundle.index.ntotal
    centroids = bundle.index.reconstruct_n(0, k)
    xy = PCA(2).fit_transform(centroids) if k >= 2 else np.zeros((k, 2))
    rows = bundle.table.to_pylist()
    actions = bundle.actions
    support = np.array([r["support"] for r in rows])
    fig, ax = plt.subplots(figsize=SIZE)
    colours, size = plt.get_cmap("tab10"), 20 + 300 * support / max(support.max(), 1e-12)
    for j, action in enumerate(actions):
        mine = np.array([r["best_action"] == action for r in rows])
        if mine.any():
            ax.scatter(xy[mine, 0], xy[mine, 1], s=size[mine], alpha=0.7, color=colours(j % 10),
                       label=f"System 2 chose {action}")
    if not actions:  # a continuous world: colour by the first dimension of System 2's action there
        first = np.array([r["best_action"][0] for r in rows])
        dots = ax.scatter(xy[:, 0], xy[:, 1], s=size, alpha=0.7, c=first, cmap="viridis")
        fig.colorbar(dots, ax=ax, label="System 2's action, dimension 1")
    avoid = np.array([bool(r["avoid"]) for r in rows])
    if avoid.any():
        ax.scatter(xy[avoid, 0], xy[avoid, 1], marker="x", color="black", s=25, label="has an avoid list")
    demoted = np.array([bool(r.get("demoted")) for r in rows])
    if demoted.any():
        ax.scatter(xy[demoted, 0], xy[demoted, 1], facecolors="none", edgecolors="red", s=120, linewidths=1.5,
                   label="demoted (audits disagreed)")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"{world} {bundle.version}: {k} situations (size = support)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), markerscale=0.6)
    return fig


def _timings(con: Any, world: str) -> plt.Figure | None:
    """Seconds per stage over the last nights that did the work."""
    nights = [{"started_at": started, "status": status_, "seconds": json.loads(seconds)}
              for started, status_, seconds in run(con, """
                  SELECT strftime(timezone('UTC', started_at), '%m-%dT%H:%M'), status, seconds::VARCHAR
                  FROM consolidations WHERE world = ? AND seconds::VARCHAR <> '{}'
                  ORDER BY started_at DESC LIMIT 20""", [world])][::-1]
    if not nights:
        return None
    fig, ax = plt.subplots(figsize=SIZE)
    bottom = np.zeros(len(nights))
    for stage in STAGES:
        seconds = np.array([r["seconds"].get(stage, 0.0) for r in nights])
        ax.bar(np.arange(len(nights)), seconds, bottom=bottom, label=stage)
        bottom += seconds
    ax.set_xticks(np.arange(len(nights)), [f"{r['started_at']}\n{r['status']}" for r in nights], fontsize=8,
                  rotation=45, ha="right")
    ax.set_ylabel("seconds")
    ax.set_title(f"{world}: the nights' stages")
    _few(ax, len(nights))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def _quarantine(reasons: dict[str, int]) -> plt.Figure | None:
    if not reasons:
        return None
    fig, ax = plt.subplots(figsize=(SIZE[0], 1 + 0.35 * len(reasons)))
    names = list(reasons)[::-1]
    ax.barh(names, [reasons[n] for n in names], color="#dd8452")
    ax.set_xlabel("records quarantined")
    ax.set_title("Why records were quarantined")
    return fig


# -- the page ------------------------------------------------------------------------------------

def _page(home: Home, sections: list, quarantine_png: bytes | None) -> str:
    parts = [f"<h1>dmn: what the agents learned</h1><p class=dim>{html.escape(str(home.root))}</p>"]
    for world, state, images in sections:
        bundle, night, lake = state["bundle"] or {}, state["last_night"] or {}, state["lake"]
        rows = [("published bundle", bundle.get("version", "none yet")),
                ("held-out coverage / precision", _pair(bundle.get("coverage"), bundle.get("precision"))
                 if bundle else "no bundle yet"),
                ("live precision (audits)", _pct(night.get("live_precision"))),
                ("last night", f"{night.get('status', '-')} {night.get('ended_at', '')[:19]}"
                               + (f": {night['reason']}" if night.get("reason") else "")),
                ("lake", f"{lake['episodes']:,} episodes, {lake['decisions']:,} decisions, "
                         f"{lake['simulations']:,} simulations")]
        parts.append(f"<h2>{html.escape(world)}</h2><table>" + "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows) + "</table>")
        parts += [f"<img alt='{name}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
                  for name, png in images]
        shown = {name for name, _ in images}
        if "curve" not in shown:
            parts.append("<p class=empty>No bundle yet: once a night publishes one, its coverage–precision curve "
                         "and its map of situations appear here.</p>")
        if "timings" not in shown:
            parts.append("<p class=empty>No night has consolidated this world yet (<code>dmn consolidate</code>).</p>")
    if not sections:
        parts.append("<p class=empty>No worlds yet: log agents' deliberation into the inbox, then <code>dmn "
                     "consolidate</code> (or <code>dmn demo</code> to watch the reference agent).</p>")
    parts.append("<h2>Quarantine</h2>" + (
        f"<img alt='quarantine' src='data:image/png;base64,{base64.b64encode(quarantine_png).decode()}'>"
        if quarantine_png else "<p>Nothing was quarantined.</p>"))
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "img{max-width:49%;margin:.3em 0}table{border-collapse:collapse;margin:.5em 0}"
             "th,td{text-align:left;padding:.2em .8em;border-bottom:1px solid #ddd}.dim{color:#777}"
             ".empty{color:#555;background:#f6f6f6;padding:.6em 1em;border-radius:4px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>dmn report</title><style>{style}</style>"
            f"</head><body>{''.join(parts)}</body></html>")


def _save(fig: plt.Figure, path: Path) -> bytes:
    sink = io.BytesIO()
    fig.tight_layout()
    fig.savefig(sink, format="png", dpi=110, bbox_inches="tight")  # legends outside the axes included
    plt.close(fig)
    write_atomic(path, sink.getvalue())  # a full disk fails in one line, and leaves no half-written plot
    return sink.getvalue()


def _few(ax: plt.Axes, n: int) -> None:
    """Bars of a chart with few of them at their usual width, not stretched across it."""
    if n < 6:
        ax.set_xlim(-0.5 - (6 - n) / 2, n - 0.5 + (6 - n) / 2)


def _slug(world: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in world)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _pair(coverage: float | None, precision: float | None) -> str:
    return f"{_pct(coverage)} / {_pct(precision)}"
