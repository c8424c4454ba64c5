"""What a night learns from: System 2's labelled steps of one (world, encoder), read from the lake.

A step is labelled when System 2 decided it (`source = 'system2'`), or when System 1 decided it and
System 2 was asked too (logged as the step's simulations): System 2's answer is then its best-scoring
candidate it did not veto. An answer is right at a step when it is *acceptable* there: System 2's own
choice, or a candidate it did not veto that scored within `score_tolerance` stakes of its best (a stake:
how much a typical decision of the world is worth by System 2's scores, `Experience.stake`). Where System 2
was nearly indifferent, any of its near-best candidates would do, and System 1 may answer with either. Unaudited System 1 steps teach nothing: learning from its own answers would
only make System 1 surer of itself. A step audits System 1 when both answers are known: a System 2
decision carrying the answer System 1 withheld (`reflex`), or a System 1 step System 2 was asked about.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import duckdb
import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dmn.bundle.decide import action_distance, nearest
from dmn.config import ConsolidateSettings
from dmn.errors import DmnError
from dmn.lake.duck import connect, run
from dmn.lake.store import Store
from dmn.sleep.states import States


@dataclass
class Experience:
    world: str
    encoder: str
    actions: list[str]
    """The action vocabulary: labels and candidate actions are indices into it."""
    episode: np.ndarray
    """(n,) episode id of each labelled step."""
    ts: np.ndarray
    """(n,) Unix seconds of each step's decision."""
    states: States
    """(n, d) float32 latent states: in this process, or on the cluster (`dmn.sleep.states`)."""
    label: np.ndarray
    """(n,) System 2's action, as its index in `actions` (0 in a continuous world: its vector is `target`)."""
    acceptable: np.ndarray
    """(n, actions) the actions as good as System 2's choice at each step, by its own scores (`acceptable`);
    (n, 0) in a continuous world, where `right` measures distance instead."""
    gap: np.ndarray
    """(n, actions) how many stakes below System 2's best each action scored (0: its choice; inf: vetoed or
    never imagined)."""
    stake: float
    """The world's typical stake of a decision: the median, over steps with two candidates or more it did not
    veto, of System 2's best score less its worst (1.0 where there are none)."""
    weight: np.ndarray
    """(n,) age weight, exp(-ln 2 * age / half-life)."""
    reward: np.ndarray
    """(n,) reward the step earned in the world (NaN when no outcome was logged)."""
    reflex: np.ndarray
    """(n,) System 1's answer on the steps that audited it, -1 elsewhere (0 in a continuous world, whose answers
    are `reflex_vector`)."""
    represents: np.ndarray
    """(n,) how many steps of the agent's life each labelled step stands for: an audit stands for itself
    and its share of the reflex-served steps of its episode that nobody checked (1 + served / audits);
    any other labelled step for itself. Weighting by it makes held-out figures those of the states the
    agent actually meets, not only of those where System 1 abstained."""
    sim_step: np.ndarray
    """(m,) the labelled step each simulation belongs to (index into the n steps)."""
    sim_action: np.ndarray
    sim_score: np.ndarray
    sim_vetoed: np.ndarray
    sim_imagined: np.ndarray
    """(m,) whether the simulation logged its imagined consequence (a predicted latent), which the night
    reads again to type it (`Window.types`)."""
    # A continuous world's actions (empty in a discrete world, whose actions are the indices above):
    target: np.ndarray
    """(n, a) System 2's action at each step."""
    reflex_vector: np.ndarray
    """(n, a) System 1's answer on the steps that audited it (`reflex` is 0 there), NaN elsewhere."""
    sim_vector: np.ndarray
    """(m, a) each simulation's action."""
    low: np.ndarray
    """(a,) the least value of each action dimension seen (candidates and choices)."""
    high: np.ndarray
    """(a,) the greatest: with `low`, the range distances between actions are measured in."""
    tolerance: float
    """An answer within this distance of System 2's action is right (`distance`)."""

    @property
    def dim(self) -> int:
        return self.states.dim

    @property
    def action_dim(self) -> int:
        """The length of a continuous world's action vectors; 0 in a discrete world."""
        return self.target.shape[1] if len(self.target) else 0

    def distance(self, actions: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(len(rows),) how far each action vector is from System 2's at steps `rows` (`action_distance`)."""
        return action_distance(actions, self.target[rows], self.low, self.high)

    def right(self, actions: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(len(rows),) whether each answer is as good as System 2's choice at steps `rows`: an acceptable
        action (a discrete world's actions are indices; -1, one these steps never saw, is never right), or a
        vector within `tolerance` of System 2's."""
        if self.action_dim:
            return self.distance(actions, rows) <= self.tolerance
        actions = np.asarray(actions)
        return (actions >= 0) & self.acceptable[rows, np.maximum(actions, 0)]

    def reflexes(self, rows: np.ndarray) -> np.ndarray:
        """System 1's answers on the audited steps among `rows`: indices, or vectors."""
        return self.reflex_vector[rows] if self.action_dim else self.reflex[rows]


def pairs(store: Store) -> list[tuple[str, str, str]]:
    """(world, encoder, newest batch of its decisions) of every pair with decisions, newest encoder first per world.

    Read from the batches' manifests, which say whose decisions each holds and how recent; only batches from
    before manifests said so are read from the lake.
    """
    manifests = store.manifests()
    newest: dict[tuple[str, str], tuple[str, float]] = {}  # (world, encoder): (its newest batch, its newest decision)

    def seen(world: str, encoder: str, batch: str, last: float) -> None:
        batch0, last0 = newest.get((world, encoder), ("", -math.inf))
        newest[world, encoder] = max(batch0, batch), max(last0, last)

    for m in manifests:
        for row in m.get("decisions", []):
            seen(row["world"], row["encoder"], row.get("batch", m["batch"]), row["last"])  # a compacted one's own
    older = [m for m in manifests if "decisions" not in m and m["files"].get("decisions")]
    if older:
        for row in run(connect(), f"""SELECT world, encoder, max(batch), epoch(max(coalesce(ts, ingested_at)))
                                      FROM ({store.table_sql('decisions', older)}) GROUP BY ALL"""):
            seen(*row)
    return [(w, e, batch) for (w, e), (batch, _) in sorted(newest.items(), key=lambda item: (item[0][0], -item[1][1]))]


class Window:
    """A world's window of the lake, read in this process: the night's `Experience`, then a sample of its
    imagined consequences and their outcome types (`dmn.sleep.cluster.outcome_types`), never all of those
    latents at once. The Ray engine's `dmn.sleep.distributed.Window` reads the same, by tasks.

    >>> window = Window(Store(home), "CartPole-v1", "jepa@3", ConsolidateSettings())  # doctest: +SKIP
    >>> exp = window.experience()  # doctest: +SKIP
    """

    def __init__(self, store: Store, world: str, encoder: str, settings: ConsolidateSettings,
                 now: float | None = None):
        self.world, self.encoder, self.settings = world, encoder, settings
        self.now = time.time() if now is None else now
        self.con = store.connect({"decisions", "simulations", "outcomes"})

    def experience(self) -> Experience:
        """The labelled steps of the last `window_days`, newest first (`labelled_steps`, `newest`, `latents`)."""
        s = self.settings
        steps = newest([labelled_steps(self.con, self.world, self.encoder, self.now - s.window_days * 86400,
                                       s.max_decisions)], s.max_decisions)
        choose(self.con, steps)
        state, sims = latents(self.con, self.world, self.encoder)
        return experience(self.world, self.encoder, steps, States(matrix(state["state"]), s.block_rows), sims, s,
                          self.now)

    def sample(self, share: float, seed: int) -> pa.Table:
        """`consequences` of the chosen steps: a `share` of them, drawn by `seed`."""
        return consequences(self.con, self.world, self.encoder, share, seed).read_all()

    def types(self, index: faiss.Index) -> pa.Table:
        """`outcome_types_of` every consequence of the chosen steps."""
        return outcome_types_of(self.con, self.world, self.encoder, index)


def labelled_steps(con: duckdb.DuckDBPyConnection, world: str, encoder: str, since: float, limit: int,
                   shard: int = 0, shards: int = 1) -> pa.Table:
    """The `limit` newest labelled steps since `since` (Unix seconds) of the episodes of one shard (a hash of
    their id), newest first, without their latents: who decided, System 2's best where it was asked, what each
    audit stands for. `con` has the decisions, simulations and outcomes views.

    Simulations are read as columns here, their scalars only, for System 2's best per step; nothing of them
    outside the window is read beyond its keys.
    """
    params = {"world": world, "encoder": encoder, "since": since, "limit": limit, "shard": shard, "shards": shards}
    return con.sql("""
        WITH d AS (
            SELECT episode_id, step, action, action_vector, source, reflex, reflex_vector,
                   epoch(coalesce(ts, ingested_at)) AS t
            FROM decisions
            WHERE world = $world AND encoder = $encoder AND epoch(coalesce(ts, ingested_at)) >= $since
              AND hash(episode_id) % $shards = $shard),
        best AS (
            SELECT episode_id, step,
                   coalesce(arg_max(action, score) FILTER (WHERE NOT coalesce(vetoed, false)), arg_max(action, score)) AS best,
                   coalesce(arg_max(action_vector, score) FILTER (WHERE NOT coalesce(vetoed, false)),
                            arg_max(action_vector, score)) AS best_vector
            FROM simulations
            WHERE world = $world AND encoder = $encoder AND episode_id IN (SELECT episode_id FROM d)
            GROUP BY ALL),
        j AS (
            SELECT d.*, best.best, best.best_vector, (best.best IS NOT NULL OR best.best_vector IS NOT NULL) AS imagined,
                   (d.source = 'system2' AND (d.reflex IS NOT NULL OR d.reflex_vector IS NOT NULL))
                   OR (d.source = 'system1' AND (best.best IS NOT NULL OR best.best_vector IS NOT NULL)) AS audit
            FROM d LEFT JOIN best USING (episode_id, step)),
        w AS (
            SELECT *, sum((source = 'system1' AND NOT imagined)::INT) OVER e AS served,
                      sum(audit::INT) OVER e AS audits
            FROM j WINDOW e AS (PARTITION BY episode_id))
        SELECT w.episode_id, w.step, w.t,
               CASE WHEN w.source = 'system2' THEN w.action ELSE w.best END AS label,
               CASE WHEN w.source = 'system2' THEN w.action_vector ELSE w.best_vector END AS label_vector,
               CASE WHEN w.source = 'system1' THEN w.action ELSE w.reflex END AS reflex,
               CASE WHEN w.source = 'system1' THEN w.action_vector ELSE w.reflex_vector END AS reflex_vector,
               CASE WHEN w.audit THEN 1 + w.served / w.audits ELSE 1 END AS represents, o.reward
        FROM w LEFT JOIN outcomes o ON o.episode_id = w.episode_id AND o.step = w.step
        WHERE w.source = 'system2' OR w.imagined
        ORDER BY w.t DESC, w.episode_id, w.step LIMIT $limit""", params=params).to_arrow_table()


def newest(parts: list[pa.Table], limit: int) -> pa.Table:
    """The `limit` newest steps of the shards' `parts`, newest first, numbered in that order (`i`)."""
    steps = pa.concat_tables(parts)
    steps = steps.take(pc.sort_indices(steps, [("t", "descending"), ("episode_id", "ascending"), ("step", "ascending")])
                       [:limit])
    return steps.append_column("i", pa.array(np.arange(steps.num_rows, dtype=np.int64)))


SIM_ORDER = ("i", "action", "action_vector", "score", "vetoed")
"""A step's simulations are in this order on every engine (`in_order`): by step, then candidate."""
_CHOSEN_SIMULATIONS = """
    SELECT s.i, m.action, m.action_vector, m.score, coalesce(m.vetoed, false) AS vetoed, m.predicted
    FROM simulations m JOIN chosen s USING (episode_id, step)
    WHERE m.world = $world AND m.encoder = $encoder"""
"""The chosen steps' simulations (`choose`), with the `SIM_ORDER` columns and their imagined consequences."""


def choose(con: duckdb.DuckDBPyConnection, steps: pa.Table) -> None:
    """Make `steps` (numbered, `newest`) the steps whose latents `con` reads (`latents`, `consequences`)."""
    con.register("chosen", steps.select(["episode_id", "step", "i"]))


def latents(con: duckdb.DuckDBPyConnection, world: str, encoder: str) -> tuple[pa.Table, pa.Table]:
    """The latents of the chosen steps (`choose`) in their order: (i, state) of each, and its simulations'
    (`SIM_ORDER`, and whether a consequence was imagined) in `in_order`'s order. The imagined consequences
    themselves are read when they are typed (`consequences`): a night's are gigabytes."""
    params = {"world": world, "encoder": encoder}
    # Read last, in order, and carried through no sort or window before.
    state = con.sql("""SELECT s.i, d.state FROM chosen s JOIN decisions d USING (episode_id, step)
                       WHERE d.world = $world AND d.encoder = $encoder ORDER BY s.i""", params=params).to_arrow_table()
    sims = con.sql(f"""SELECT {", ".join(SIM_ORDER)}, predicted IS NOT NULL AS imagined FROM ({_CHOSEN_SIMULATIONS})
                        ORDER BY {", ".join(SIM_ORDER)}""", params=params).to_arrow_table()
    return state, sims


def consequences(con: duckdb.DuckDBPyConnection, world: str, encoder: str, share: float = 1.0, seed: int = 0
                 ) -> pa.RecordBatchReader:
    """The imagined consequences (predicted latents) of the chosen steps' simulations, with the columns that
    place each among them (`SIM_ORDER`), streamed in no order: all of them, or a `share` drawn by a hash of
    each simulation and `seed` (the same draw on every engine and every read)."""
    return con.sql(f"""{_CHOSEN_SIMULATIONS} AND m.predicted IS NOT NULL
          AND ($share >= 1 OR hash(m.episode_id, m.step, m.action, m.action_vector, m.score, $seed)
                                  / 18446744073709551616.0 < $share)
        """, params={"world": world, "encoder": encoder, "share": share, "seed": seed}).to_arrow_reader(65536)


def outcome_types_of(con: duckdb.DuckDBPyConnection, world: str, encoder: str, index: faiss.Index) -> pa.Table:
    """The outcome type (the nearest of `index`'s centroids) of every imagined consequence of the chosen steps,
    with the columns that place it (`SIM_ORDER`), in no order: read a batch at a time."""
    reader = consequences(con, world, encoder)
    schema = reader.schema.remove(reader.schema.get_field_index("predicted")).append(pa.field("type", pa.int32()))
    return pa.Table.from_batches([batch.drop_columns(["predicted"]).append_column(
        "type", pa.array(nearest(index, matrix(batch.column("predicted")))[0].astype(np.int32))) for batch in reader],
        schema=schema)


def in_order(rows: pa.Table) -> pa.Table:
    """`rows` (simulations, with the `SIM_ORDER` columns) in that order, as `latents` reads them: the order
    that puts what several tasks, or several reads, return in line with the `Experience`'s simulations.
    (Simulations alike in all of those columns may come in either order: nothing the night computes from
    them tells them apart.)"""
    con = connect()
    con.register("keys", rows.select(list(SIM_ORDER)).append_column("pos", pa.array(np.arange(len(rows)))))
    order = con.sql(f"SELECT pos FROM keys ORDER BY {', '.join(SIM_ORDER)}, pos").fetchnumpy()["pos"]
    return rows.take(order)


def experience(world: str, encoder: str, steps: pa.Table, states: States, sims: pa.Table,
               settings: ConsolidateSettings, now: float) -> Experience:
    """The night's `Experience` of the `steps` read (`newest`), their states and simulations (`latents`)."""
    if steps.num_rows == 0:
        raise DmnError(f"no System 2 decisions for world {world!r}, encoder {encoder!r} in the last "
                       f"{settings.window_days:g} days")
    if len(states) != steps.num_rows:
        raise DmnError(f"the lake changed while the night read it: {len(states)} states of {steps.num_rows} steps")
    action_dim = pc.max(pc.list_value_length(steps["label_vector"])).as_py() or 0  # 0: labels
    actions = [] if action_dim else sorted(set(steps["label"].to_pylist()) | set(steps["reflex"].drop_null().to_pylist())
                                           | set(sims["action"].to_pylist()), key=_action_order)
    index = {a: i for i, a in enumerate(actions)}
    t = steps["t"].to_numpy().astype(np.float64)
    n = steps.num_rows
    sim_step = sims["i"].to_numpy().astype(np.int64)
    sim_score = sims["score"].to_numpy().astype(np.float64)
    sim_vetoed = sims["vetoed"].to_numpy(zero_copy_only=False).astype(bool)
    if action_dim:  # a continuous world: System 2's actions are vectors, right is near them
        label, sim_action = np.zeros(n, np.int64), np.zeros(len(sim_step), np.int64)
        target, sim_vector = matrix(steps["label_vector"], action_dim), matrix(sims["action_vector"], action_dim)
        reflex, reflex_vector = np.full(n, -1), matrix(steps["reflex_vector"], action_dim)
        reflex[~np.isnan(reflex_vector[:, 0])] = 0
        seen = np.concatenate([target, sim_vector])
        low, high = np.nanmin(seen, 0), np.nanmax(seen, 0)
        right, gap, stake = np.zeros((n, 0), bool), np.zeros((n, 0)), 1.0
    else:
        label = np.array([index[a] for a in steps["label"].to_pylist()], np.int64)
        sim_action = np.array([index[a] for a in sims["action"].to_pylist()], np.int64)
        reflex = np.array([-1 if a is None else index[a] for a in steps["reflex"].to_pylist()], np.int64)
        target = sim_vector = reflex_vector = np.zeros((0, 0), np.float32)
        low = high = np.zeros(0, np.float32)
        right, gap, stake = acceptable(label, len(actions), sim_step, sim_action, sim_score, sim_vetoed,
                                       settings.score_tolerance)
    return Experience(
        world=world, encoder=encoder, actions=actions,
        episode=np.asarray(steps["episode_id"].to_pylist(), dtype=object), ts=t, states=states,
        label=label, acceptable=right, gap=gap, stake=stake,
        weight=np.exp(-math.log(2) * np.maximum(now - t, 0) / (settings.half_life_days * 86400)),
        reward=steps["reward"].to_numpy(zero_copy_only=False).astype(np.float64),
        reflex=reflex, represents=steps["represents"].to_numpy().astype(np.float64),
        sim_step=sim_step, sim_action=sim_action, sim_score=sim_score, sim_vetoed=sim_vetoed,
        sim_imagined=sims["imagined"].to_numpy(zero_copy_only=False).astype(bool),
        target=target, reflex_vector=reflex_vector, sim_vector=sim_vector, low=low, high=high,
        tolerance=settings.action_tolerance,
    )


def targets(exp: Experience, soft_weight: float, rows: np.ndarray) -> np.ndarray:
    """(len(rows), actions) how good each action was at steps `rows`, in [0, 1]: whether it was acceptable
    (hard), mixed (`soft_weight`) with where it scored between the step's worst candidate (0) and System 2's
    best (1) (soft; 0 where vetoed or never imagined, 1 for every candidate of a step whose candidates tied).

    What System 1 aims for, in the policy and the table alike: where System 2 was nearly indifferent, several
    actions are acceptable and System 1 may be sure of either, but of those it answers with the one nearer
    System 2's best. The soft part is measured against the step's own spread, not the world's stake, so that it
    tells actions apart where they all scored within the tolerance too: there an action between the others
    (Acrobot's zero torque) is always acceptable and never best, and repeated at every step it stalls the
    agent, a cost no single step shows.
    """
    gap = exp.gap[rows]
    known = np.isfinite(gap)
    gap = np.where(known, gap, 0.0)
    spread = gap.max(1, keepdims=True)
    near = np.where(known, 1 - np.divide(gap, spread, out=np.zeros_like(gap), where=spread > 0), 0.0)
    return (1 - soft_weight) * exp.acceptable[rows] + soft_weight * near


def acceptable(label: np.ndarray, n_actions: int, sim_step: np.ndarray, sim_action: np.ndarray, sim_score: np.ndarray,
               sim_vetoed: np.ndarray, tolerance: float, stake: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Which actions were as good as System 2's choice at each of n steps, by its own scores: (acceptable
    (n, actions), gap (n, actions), the world's stake).

    `gap` is how many stakes below its best a candidate scored, over the candidates it did not veto (all,
    where it vetoed every one); inf for an action vetoed or never imagined there, except System 2's choice
    where it was never imagined (nothing says it was worse: 0). The stake (unless given: a bundle's, say) is
    the median spread (best less worst) of those candidates, over the steps with two or more of them.
    Acceptable: a gap of at most `tolerance`. For a planner that takes its best-scoring candidate, that
    always includes its choice.
    """
    n = len(label)
    gap = np.full((n, n_actions), np.inf)
    imagined = np.zeros((n, n_actions), bool)
    if len(sim_step):
        imagined[sim_step, sim_action] = True
        all_vetoed = np.ones(n, bool)
        np.logical_and.at(all_vetoed, sim_step, sim_vetoed)
        allowed = ~sim_vetoed | all_vetoed[sim_step]
        best, worst = np.full(n, -np.inf), np.full(n, np.inf)
        np.maximum.at(best, sim_step[allowed], sim_score[allowed])
        np.minimum.at(worst, sim_step[allowed], sim_score[allowed])
        if stake is None:
            spread = (best - worst)[np.bincount(sim_step[allowed], minlength=n) >= 2]
            stake = float(np.median(spread)) if len(spread) and np.median(spread) > 0 else 1.0
        np.minimum.at(gap, (sim_step[allowed], sim_action[allowed]), (best[sim_step] - sim_score)[allowed] / stake)
    unjudged = ~imagined[np.arange(n), label]
    gap[np.flatnonzero(unjudged), label[unjudged]] = 0.0
    return gap <= tolerance, gap, 1.0 if stake is None else stake


def matrix(column: pa.ChunkedArray | pa.Array, dim: int | None = None) -> np.ndarray:
    """A list column of equal-length vectors as an (n, d) float32 matrix (NULL rows become NaN); no copy
    where the column is one chunk without NULLs."""
    chunks = [c for c in (column.chunks if isinstance(column, pa.ChunkedArray) else [column]) if len(c)]
    if dim is None:
        dim = len(chunks[0][0]) if chunks else 0
    pieces = []
    for chunk in chunks:
        if chunk.null_count == 0 and len(values := chunk.flatten()) == len(chunk) * dim:
            pieces.append(values.to_numpy().astype(np.float32, copy=False).reshape(len(chunk), dim))
            continue
        rows = np.full((len(chunk), dim), np.nan, np.float32)
        valid = chunk.is_valid().to_numpy(zero_copy_only=False)
        if valid.any():
            rows[valid] = chunk.filter(valid).flatten().to_numpy().reshape(-1, dim)
        pieces.append(rows)
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces) if pieces else np.zeros((0, dim), np.float32)


def _action_order(action: str) -> tuple[int, float | str]:
    """Integer actions in numeric order (2 before 10), then the others by name."""
    try:
        return 0, float(action)
    except ValueError:
        return 1, action
