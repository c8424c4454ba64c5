"""The reference world: its world model learns, its planner plans, its agent logs what it printed."""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import dmn
from sklearn.metrics import roc_auc_score

from dmn import ANY_ENCODER, Asked
from dmn.errors import DmnError
from dmn.lake.ingest import ingest
from dmn.lake.store import Store
from dmn.progress import Printed
from dmn.worlds.agent import run
from dmn.worlds.model import WorldModel
from dmn.worlds.plan import Planner
from dmn.worlds.settings import PlannerSettings, ReferenceSettings, WorldSettings
from dmn.worlds.train import Episode, collect, fit, load_world, make_env, train, windows

TINY = ReferenceSettings(world=WorldSettings(latent_dim=16, hidden=32, explore_steps=400, updates=30, round_steps=60,
                                    round_updates=10, batch=64),
                planner=PlannerSettings(horizon=4, samples=16, iterations=2, elites=4, continuous_samples=16,
                                        continuous_iterations=2, continuous_elites=4))
TINY_TOML = """
[world]
latent_dim = 16
hidden = 32
explore_steps = 400
updates = 30
round_steps = 60
round_updates = 10
batch = 64

[planner]
horizon = 4
samples = 16
elites = 4
"""


# -- the world model and its training -------------------------------------------------------------

def test_windows_give_discounted_returns_and_mask_what_is_unknown():
    obs = np.arange(5, dtype=np.float32)[:, None]
    ended = Episode(obs, np.array([0, 1, 0, 1]), np.array([1, 2, 3, 4], np.float32), terminated=True)
    data = windows([ended], rollout=2, gamma=0.5)
    # The value target of step t is the return from the observation it leads to: 4 steps -> [2+.5*3+.25*4, 3+.5*4, 4, 0].
    assert data["value"][:, 0].tolist() == [4.5, 5.0, 4.0, 0.0]
    assert data["done"][:, 0].tolist() == [0, 0, 0, 1]
    assert data["mask"].tolist() == [[1, 1], [1, 1], [1, 1], [1, 0]]  # the last window runs past the end
    assert data["next"][0].flatten().tolist() == [1.0, 2.0] and data["actions"][1].tolist() == [1, 0]
    # Cut by the time limit instead, the last steps' returns are unknown (gamma 0.25: 4 steps leave < 1%).
    cut = windows([Episode(np.arange(7, dtype=np.float32)[:, None], np.zeros(6, int), np.ones(6, np.float32),
                           terminated=False)], rollout=1, gamma=0.25)
    assert cut["value_mask"][:, 0].tolist() == [1, 1, 0, 0, 0, 0] and cut["done"].sum() == 0


def test_collect_plays_whole_episodes_until_enough_steps():
    env = make_env("CartPole-v1")
    seen = []
    episodes = collect(env, 30, lambda obs, previous: seen.append(previous) or 0, seed=3)
    assert sum(len(e.actions) for e in episodes) >= 30 and all(e.terminated for e in episodes)
    assert all(len(e.obs) == len(e.actions) + 1 for e in episodes)
    assert seen[0] is None and seen[1] == 0  # each choice sees the previous action of its episode


def test_exploration_restarts_from_rare_states_and_reaches_further():
    def sticky(rng):
        return lambda obs, previous: previous if previous is not None and rng.random() < 0.75 else int(rng.integers(2))

    def coverage(episodes):  # distinct boxes of a fixed grid over (position, velocity, angle, angular velocity)
        return len(np.unique(np.floor(np.concatenate([e.obs for e in episodes]) / [0.1, 0.2, 0.02, 0.2]), axis=0))

    plain = collect(make_env("CartPole-v1"), 3000, sticky(np.random.default_rng(0)), seed=0)
    frontier = []
    explored = collect(make_env("CartPole-v1"), 3000, sticky(np.random.default_rng(0)), seed=0, restarts=0.5,
                       frontier=frontier)
    assert coverage(explored) > 1.15 * coverage(plain) and len(frontier) >= 3000 // 5
    starts = np.array([e.obs[0] for e in explored])
    assert (np.abs(starts).max(1) > 0.05).sum() > len(explored) // 4  # a reset starts within 0.05 of upright

    episodes = collect(make_env("CartPole-v1"), 200, sticky(np.random.default_rng(1)), seed=1, restarts=1.0,
                       frontier=None)  # an environment that cannot be copied
    assert all(np.abs(e.obs[0]).max() <= 0.05 for e in episodes)  # it only ever resets


class Uncopyable(gym.Wrapper):
    def __init__(self, env):
        super().__init__(env)
        self.lock = threading.Lock()  # what deepcopy cannot copy: a simulator handle, say


class BrokenCopies(gym.Wrapper):
    """Copies without error, then fails at its first step, as Box2D's environments do."""

    broken = False

    def __deepcopy__(self, memo):
        clone = copy.copy(self)
        clone.broken = True
        return clone

    def step(self, action):
        assert not self.broken
        return super().step(action)


@pytest.mark.parametrize("wrapper", [Uncopyable, BrokenCopies])
def test_an_environment_that_cannot_be_copied_trains_from_resets_and_says_so(wrapper):
    env_id = f"{wrapper.__name__}CartPole-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=lambda **kw: wrapper(gym.make("CartPole-v1")), max_episode_steps=500)
    said = []
    _, meta = train(env_id, TINY.world, say=Printed(said.append))
    assert meta["restarts"].startswith("resets only") and meta["transitions"] >= TINY.world.explore_steps
    assert said[0].startswith(env_id) and "cannot be restarted from copies" in said[0]
    assert said[1:] == [f"training the {env_id} world model"]  # then how far the training is


def test_training_teaches_imagination_to_foresee_the_end_without_collapse():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = windows(collect(make_env("CartPole-v1"), 1000, lambda obs, prev: int(rng.integers(2)), seed=0),
                   rollout=3, gamma=0.9)
    model = WorldModel(4, 2, 16, 32)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def foresight() -> float:
        """How well the episode's end three steps ahead is told from imagined latents alone (ROC AUC)."""
        whole = data["mask"][:, 2] > 0
        with torch.no_grad():
            z = model.encode(data["obs"][whole])
            for k in range(3):
                z = model.step(z, data["actions"][whole][:, k])
            return roc_auc_score(data["done"][whole][:, 2].numpy(), model.heads(z, data["actions"][whole][:, 2])[1])

    untrained = foresight()
    before = fit(model, opt, data, WorldSettings(latent_dim=16, hidden=32, batch=128), updates=1)
    target_before = [p.clone() for p in model.target.parameters()]
    after = fit(model, opt, data, WorldSettings(latent_dim=16, hidden=32, batch=128), updates=300)
    assert untrained < 0.7 < 0.85 < foresight()
    assert after["heads"] < before["heads"] / 2 and after["variance"] < before["variance"]
    with torch.no_grad():
        assert model.encode(data["obs"]).std(0).min() > 0.05  # VICReg: no latent dimension collapsed
    assert all(not torch.equal(a, b) for a, b in zip(target_before, model.target.parameters()))  # the EMA moved


def test_a_trained_world_is_cached_and_checked(home):
    trained = []
    world = load_world(home, "CartPole-v1", TINY.world, on_train=Printed(trained.append))
    said = len(trained)
    again = load_world(home, "CartPole-v1", TINY.world, on_train=Printed(trained.append))
    assert said == len(trained) and trained[0].startswith("training the CartPole-v1 world model (once")
    assert again.encoder == world.encoder and world.encoder.startswith("jepa-")
    assert world.meta["transitions"] >= 400 + 60 and world.meta["failure"] is True  # ending CartPole is failing
    z = world.encode(np.zeros(4, np.float32))
    assert z.shape == (16,) and np.array_equal(z, again.encode(np.zeros(4, np.float32)))
    other = load_world(home, "CartPole-v1", WorldSettings(**{**vars(TINY.world), "seed": 7}))
    assert other.encoder != world.encoder  # other settings, another model
    for weights in home.worlds.glob("CartPole-v1/*/model.pt"):
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    with pytest.raises(DmnError, match="damaged .*checksum.*delete that folder"):
        load_world(home, "CartPole-v1", TINY.world)
    (next(home.worlds.glob("CartPole-v1/*/meta.json"))).write_text("{")
    with pytest.raises(DmnError, match="damaged"):
        load_world(home, "CartPole-v1", TINY.world)


@pytest.mark.parametrize("env_id, message", [
    ("NoSuchWorld-v0", "cannot make Gymnasium environment"),
    ("no_such_module:World-v0", "cannot make Gymnasium environment"),
    ("FrozenLake-v1", "needs a vector .* and Discrete actions from 0 or a bounded 1-D Box"),
])
def test_unsuitable_environments_are_refused(env_id, message):
    with pytest.raises(DmnError, match=message):
        make_env(env_id)


# -- the planner ----------------------------------------------------------------------------------

@dataclass
class LineWorld:
    """A world model written by hand: z is a position, action 0 steps left, 1 stays, 2 steps right;
    every step earns 1, and leaving [-3, 3] ends the episode (a failure)."""

    n_actions: int = 3
    failure: bool = True
    action_dim: int = 0

    def step(self, z, action):
        return z + (action.to(z.dtype)[:, None] - 1)

    def heads(self, z, action):
        outside = z[:, 0].abs() > 3
        return torch.ones(len(z)), torch.where(outside, 20.0, -20.0), torch.zeros(len(z))


def test_the_planner_vetoes_what_ends_in_failure_and_takes_the_best_of_the_rest():
    planner = Planner(LineWorld(), PlannerSettings(horizon=3, samples=30, iterations=3, elites=6, veto=0.5))
    plan = planner.plan(np.array([3.0], np.float32))
    by_action = {c.action: c for c in plan.candidates}
    assert sorted(by_action) == [0, 1, 2]
    assert by_action[2].vetoed and by_action[2].ending > 0.99  # stepping right leaves the line at once
    assert not by_action[0].vetoed and by_action[0].score == pytest.approx(3.0)  # three more steps of reward
    assert by_action[2].score < by_action[1].score <= by_action[0].score
    assert plan.action in (0, 1) and by_action[plan.action].score == max(c.score for c in plan.candidates
                                                                         if not c.vetoed)
    assert by_action[0].predicted.shape == (1,) and by_action[0].predicted[0] <= 3  # it imagines staying on


def test_where_ending_is_the_goal_nothing_is_vetoed():
    world = LineWorld(failure=False)
    plan = Planner(world, PlannerSettings(horizon=2, samples=9, elites=3)).plan(np.array([3.0], np.float32))
    assert not any(c.vetoed for c in plan.candidates)


class SlideWorld:
    """A continuous world written by hand: z is a position, an action in [-1, 1] moves it by that much, and a
    step earns minus its distance from 0.5, less a little effort: the best first action is 0.5."""

    n_actions, action_dim, failure = 0, 1, torch.tensor(False)
    action_low, action_high = torch.tensor([-1.0]), torch.tensor([1.0])

    def step(self, z, action):
        return z + action

    def heads(self, z, action):
        return -(z[:, 0] - 0.5).abs() - 0.01 * (action ** 2).sum(-1), torch.full((len(z),), -20.0), torch.zeros(len(z))


def test_a_continuous_search_finds_the_best_action_and_a_good_proposal_ends_it_sooner():
    settings = PlannerSettings(horizon=3, continuous_samples=64, continuous_elites=8, continuous_iterations=8,
                               value_weight=0)
    planner = Planner(SlideWorld(), settings)
    cold = planner.plan(np.zeros(1, np.float32))
    assert cold.action.shape == (1,) and abs(cold.action[0] - 0.5) < 0.1 and not cold.seeded
    assert len(cold.candidates) == 8 and all(c.action.shape == (1,) and -1 <= c.action[0] <= 1 for c in cold.candidates)
    assert cold.action == pytest.approx(np.mean([c.action for c in cold.candidates], 0))  # the elites' mean
    assert 64 < cold.sequences < 64 * 8  # it converged before its last iteration
    seeded = planner.plan(np.zeros(1, np.float32), (np.array([0.5]), np.array([0.05])))
    assert seeded.seeded and abs(seeded.action[0] - 0.5) < 0.1 and seeded.sequences < cold.sequences
    misled = planner.plan(np.zeros(1, np.float32), (np.array([-0.9]), np.array([0.05])))
    assert abs(misled.action[0] - 0.5) < 0.1  # the cold half of the samples outvotes a wrong proposal


# -- the agent ------------------------------------------------------------------------------------

class AlwaysLeft:
    """A System 1 stand-in: always answers action 0, but withholds every third answer for an audit."""

    manifest = None  # no bundle: an answer is right only when it is System 2's choice
    world, encoder = "CartPole-v1", ANY_ENCODER

    def __init__(self):
        self.calls = 0

    def ask(self, z):
        assert z.shape == (16,)
        self.calls += 1
        reflex = SimpleNamespace(action=0, confidence=0.875)
        return Asked(None, reflex) if self.calls % 3 == 0 else Asked(reflex)

    def propose(self, z):  # asked only where System 1 abstains without an audit, which this one never does
        return None


def test_the_agent_logs_every_decision_simulation_and_outcome(home):
    report = run(home, "CartPole-v1", 3, seed=1, settings=TINY)
    summary = report.to_dict()
    assert summary["episodes"] == 3 and summary["decisions"] == sum(report.returns)  # CartPole pays 1 per step
    assert summary["simulations"] == 2 * summary["decisions"] and summary["system1_share"] == 0
    assert summary["system1_latency_ms"] is None and summary["system2_latency_ms"] > 0
    ingest(home)
    store = Store(home)
    rows = store.sql("SELECT count(*), sum(\"return\") FROM episodes WHERE world = 'CartPole-v1' "
                     "AND encoder = ?", [summary["encoder"]]).fetchall()
    assert rows == [(3, sum(report.returns))]
    # System 2's answer is its best candidate that it did not veto: the logs say which it took.
    taken = store.sql("""
        SELECT count(*) FROM decisions d JOIN (
            SELECT episode_id, step, arg_max(action, score) FILTER (WHERE NOT vetoed) AS best,
                   arg_max(action, score) AS best_any FROM simulations GROUP BY ALL) s USING (episode_id, step)
        WHERE d.action = coalesce(s.best, s.best_any)""").fetchall()
    assert taken == [(summary["decisions"],)]


def test_reflexes_answer_first_and_audits_measure_agreement(home):
    reflexes = AlwaysLeft()
    report = run(home, "CartPole-v1", 2, seed=2, reflexes=reflexes, settings=TINY)
    s = report.to_dict()
    assert reflexes.calls == s["decisions"]
    served = s["decisions"] - s["decisions"] // 3
    assert report.system1 in (served, served + 1) and s["audited"] == s["decisions"] - report.system1
    assert s["simulations"] == 2 * s["audited"]  # only System 2 imagines
    ingest(home)
    store = Store(home)
    by_source = dict(store.sql("SELECT source, count(*) FROM decisions GROUP BY source").fetchall())
    assert by_source == {"system1": report.system1, "system2": s["audited"]}
    assert store.sql("SELECT DISTINCT confidence FROM decisions WHERE source = 'system1'").fetchall() == [(0.875,)]
    audits = store.sql("SELECT count(*), avg((action = reflex)::INT) FROM decisions WHERE reflex IS NOT NULL"
                       ).fetchone()
    assert audits[0] == s["audited"] and s["agreement"] == pytest.approx(audits[1]) == s["precision"]
    lenient = AlwaysLeft()
    lenient.manifest = {"stake": 1.0, "score_tolerance": 1e9}  # any action System 2 did not veto is right
    judged = run(home, "CartPole-v1", 2, seed=2, reflexes=lenient, settings=TINY).to_dict()
    assert judged["precision"] >= judged["agreement"] and judged["precision"] > 0


class Proposing:
    """A System 1 stand-in for a continuous world that never answers, only proposes a start for the planner."""

    manifest = None
    world, encoder = "Pendulum-v1", ANY_ENCODER

    def ask(self, z):
        return Asked(None)

    def propose(self, z):
        return SimpleNamespace(action=np.zeros(1, np.float32), spread=np.full(1, 0.1, np.float32))


def test_a_continuous_agent_logs_vectors_and_its_candidates_once_per_step(home):
    report = run(home, "Pendulum-v1", 1, seed=0, settings=TINY)
    s = report.to_dict()
    assert s["decisions"] == 200 and s["simulations"] == 4 * 200 and s["agreement"] is None
    assert s["seeded_plans"] == 0 and 16 <= s["sequences_per_plan"] <= 32
    seeded = run(home, "Pendulum-v1", 1, seed=0, reflexes=Proposing(), settings=TINY).to_dict()
    assert seeded["seeded_plans"] == 200 and seeded["sequences_per_seeded_plan"] >= 16
    ingest(home)
    store = Store(home)
    decisions = store.sql("SELECT count(*), min(len(action_vector)), count(action), max(abs(action_vector[1]) <= 2) "
                          "FROM decisions WHERE world = 'Pendulum-v1'").fetchone()
    assert decisions == (400, 1, 0, True)  # one torque each, within its bounds, and no label
    sims = store.sql("SELECT count(*), count(state), count(predicted) FROM simulations").fetchone()
    assert sims == (1600, 0, 1600)  # the latent is logged once, with the decision


def test_a_7d_arm_plans_in_mujoco(home):
    pytest.importorskip("mujoco", reason="the arm extra: pip install 'dmn[arm]'")
    s = run(home, "Pusher-v5", 1, seed=0, settings=TINY).to_dict()
    assert s["decisions"] == 100 and s["simulations"] == 4 * 100  # an episode is 100 steps
    ingest(home)
    lengths = Store(home).sql("SELECT DISTINCT len(action_vector) FROM decisions").fetchall()
    assert lengths == [(7,)]


def test_bad_arguments_are_refused(home):
    with pytest.raises(ValueError, match="episodes"):
        run(home, "CartPole-v1", 0, settings=TINY)


# -- the command ----------------------------------------------------------------------------------

def test_world_run_then_ingest_then_sql_show_the_numbers_it_printed(home):
    (home.root / "dmn.toml").write_text(TINY_TOML)
    done = dmn("world", "run", "--env", "CartPole-v1", "--episodes", "3", "--seed", "5", "--json",
               "--home", str(home.root))
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert dmn("ingest", "--home", str(home.root)).returncode == 0
    query = """
        SELECT count(*) AS episodes, avg("return") AS mean_return, min("return") AS min_return,
               max("return") AS max_return,
               (SELECT count(*) FROM decisions) AS decisions,
               (SELECT count(*) FROM simulations) AS simulations,
               (SELECT avg(latency_ms) FROM decisions WHERE source = 'system2') AS system2_latency_ms,
               (SELECT sum(reward) FROM outcomes) AS rewards
        FROM episodes WHERE world = 'CartPole-v1'"""
    rows = dmn("sql", query, "--home", str(home.root), "--format", "json")
    assert rows.returncode == 0, rows.stderr
    row = json.loads(rows.stdout)
    for key in ("episodes", "mean_return", "min_return", "max_return", "decisions", "simulations"):
        assert row[key] == pytest.approx(printed[key]), key
    assert row["system2_latency_ms"] == pytest.approx(printed["system2_latency_ms"], rel=1e-6)
    assert row["rewards"] == pytest.approx(printed["mean_return"] * 3)
    table = dmn("world", "run", "--episodes", "1", "--home", str(home.root))  # the cached model, a table
    assert table.returncode == 0 and "mean return" in table.stdout and "training" not in table.stderr


def test_world_run_says_clearly_what_it_cannot_do(home):
    bad_env = dmn("world", "run", "--env", "FrozenLake-v1", "--home", str(home.root))
    assert bad_env.returncode == 1 and "Discrete actions" in bad_env.stderr and "Traceback" not in bad_env.stderr
    (home.root / "dmn.toml").write_text("[planner]\nveto = 1.5\n")
    bad_setting = dmn("world", "run", "--home", str(home.root))
    assert bad_setting.returncode == 1 and "veto must be positive and at most 1" in bad_setting.stderr
    (home.root / "dmn.toml").write_text("[world]\ngamma = 1.0\n")
    bad_gamma = dmn("world", "run", "--home", str(home.root))
    assert bad_gamma.returncode == 1 and "gamma must be positive and below 1" in bad_gamma.stderr
    audit_alone = dmn("world", "run", "--audit-rate", "0.5", "--home", str(home.root))
    assert audit_alone.returncode == 1 and "needs --reflexes" in audit_alone.stderr


def test_system2_is_a_function_of_the_state():
    """Common random numbers: the same state gets the same answer and the same figures, whatever came
    before and whichever run (another day's agent) asks."""
    settings = PlannerSettings(horizon=4, samples=12, iterations=2, elites=3, seed=5)
    planner = Planner(LineWorld(), settings)
    first = planner.plan(np.array([1.0], np.float32))
    planner.plan(np.array([-2.0], np.float32))
    again = Planner(LineWorld(), settings).plan(np.array([1.0], np.float32))
    assert again.action == first.action
    assert [c.score for c in again.candidates] == [c.score for c in first.candidates]


def test_demo_sleeps_and_wakes(home):
    """Day 0 System 2 only; a night publishes; day 1 asks System 1 first, withholding some answers for audits."""
    (home.root / "dmn.toml").write_text(TINY_TOML.replace("iterations = 2", "iterations = 1") + """
[consolidate]
precision_target = 0.6
policy_hidden = 16
policy_epochs = 20
""")
    done = dmn("demo", "--nights", "1", "--decisions-per-day", "300", "--audit-rate", "0.2", "--json",
               "--home", str(home.root))
    assert done.returncode == 0, done.stderr
    day0, day1 = json.loads(done.stdout)
    assert day0["run"]["system1_share"] == 0 and day0["version"] is None and day0["night"] == "published v000001"
    assert day0["run"]["decisions"] >= 300 and day1["run"]["decisions"] >= 300  # a day: whole episodes to 300 decisions
    assert day1["version"] == "v000001" and day1["night"] is None and day1["run"]["system1_share"] > 0
    assert day1["run"]["audited"] > 0 and 0 <= day1["run"]["agreement"] <= day1["run"]["precision"] <= 1
    beats_random = day0["run"]["mean_return"] > day0["random_return"]  # a tiny world model need not
    assert day0["normalised_return"] == (pytest.approx(1.0) if beats_random else None)
    assert day1["held_out"]["precision"] >= 0.6  # the serving bundle's night measured it, at the home's target
    assert day1["run"]["system1_latency_ms"] < day1["run"]["system2_latency_ms"]
    table = dmn("demo", "--nights", "1", "--decisions-per-day", "150", "--home", str(home.root))
    assert table.returncode == 0 and "System 1" in table.stdout and "normalised" in table.stdout, table.stderr
