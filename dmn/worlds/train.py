"""Train the reference world model, JEPA-style, and keep it in the home.

Read top to bottom:
1. explore: random actions, each repeated for a random run so that exploration wanders off;
2. cut the episodes into windows of `rollout` steps;
3. train encoder, predictor and heads together. The loss lives in latent space: the predictor,
   unrolled from the encoded first observation, must land on the target encoder's latents of the
   observed next ones (the target is an EMA of the encoder, as in JEPA); VICReg variance and
   covariance terms keep the latents from collapsing; the heads learn reward, episode end and
   return-to-go on both the predicted and the encoded latents, so they can be trusted in imagination;
4. aggregate: the planner plays with the model, its transitions join the data, training goes on.
   Random play never balances a pole long enough to see the cart leave the track; the planner does.

The trained model is cached under `<home>/worlds/`, keyed by environment and settings, so later
runs reuse it; its encoder version is the hash of its weights.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from dmn.errors import DmnError
from dmn.home import Home, write_atomic
from dmn.progress import Progress, quiet
from dmn.worlds.model import WorldModel
from dmn.worlds.plan import Planner, one_thread
from dmn.worlds.settings import PlannerSettings, WorldSettings

Action = int | np.ndarray
"""A discrete action, or a continuous one's vector."""
MODEL_FORMAT = 1
"""Bumped when the model or its training changes, so that cached models are trained again."""
SNAPSHOT_EVERY = 5
"""Steps between the snapshots that exploration may restart from."""
EXPLORE_EPSILON = 0.1
"""Share of random actions while the planner collects data, so that it still sees the unexpected."""
COLLECT = PlannerSettings(samples=64, iterations=2, elites=8)
"""The planner that collects training data: a two-iteration CEM, fixed here so that tuning `[planner]`
never retrains a model (nor changes its encoder version)."""


@dataclass
class Episode:
    obs: np.ndarray
    """(steps + 1, obs_dim) observations."""
    actions: np.ndarray
    """(steps,) discrete actions, or (steps, a) continuous ones."""
    rewards: np.ndarray
    terminated: bool
    """Ended by the environment rather than by its time limit."""


@dataclass
class World:
    """A trained world model for one environment, with the encoder version its latents are logged under."""

    env_id: str
    model: WorldModel
    encoder: str
    meta: dict

    @torch.inference_mode()
    def encode(self, obs: np.ndarray) -> np.ndarray:
        return self.model.encode(torch.as_tensor(obs, dtype=torch.float32)).numpy()


def make_env(env_id: str) -> gym.Env:
    """The Gymnasium environment `env_id`, checked to have what the world model needs."""
    try:
        env = gym.make(env_id)
    except Exception as exc:  # noqa: BLE001 - Gymnasium raises its own errors, import errors, missing extras...
        hint = " (MuJoCo environments need the arm extra: pip install 'dmn[arm]')" if "mujoco" in str(exc).lower() else ""
        raise DmnError(f"cannot make Gymnasium environment {env_id!r}: {exc}{hint}") from None
    actions = env.action_space
    discrete = isinstance(actions, gym.spaces.Discrete) and actions.start == 0
    vectors = (isinstance(actions, gym.spaces.Box) and len(actions.shape) == 1
               and bool(np.isfinite(actions.low).all() and np.isfinite(actions.high).all()))
    if not (isinstance(env.observation_space, gym.spaces.Box) and len(env.observation_space.shape) == 1
            and (discrete or vectors)):
        env.close()
        raise DmnError(f"{env_id} has observations {env.observation_space} and actions {actions}; the reference "
                       "world needs a vector (1-D Box) observation, and Discrete actions from 0 or a bounded 1-D Box")
    return env


def random_action(space: gym.Space, rng: np.random.Generator) -> int | np.ndarray:
    """A uniformly random action of a space `make_env` accepts."""
    if isinstance(space, gym.spaces.Discrete):
        return int(rng.integers(space.n))
    return rng.uniform(space.low, space.high).astype(np.float32)


def load_world(home: Home, env_id: str, settings: WorldSettings,
               on_train: Progress | None = None) -> World:
    """The world model for `env_id` from the home's cache, trained first if there is none.

    >>> world = load_world(Home.resolve(), "CartPole-v1", WorldSettings())  # doctest: +SKIP
    """
    key = hashlib.sha256(json.dumps([MODEL_FORMAT, env_id, dataclasses.asdict(settings)],
                                    sort_keys=True).encode()).hexdigest()[:16]
    folder = home.worlds / quote(env_id, safe="") / key
    with home.lock(f"world-{key}", wait=3600):  # two agents starting together train once
        if not (folder / "meta.json").exists():
            if on_train:
                on_train(f"training the {env_id} world model (once; cached in {folder})")
            _save(folder, *train(env_id, settings, on_train))
        return _load(folder)


def train(env_id: str, settings: WorldSettings, say: Progress | None = None) -> tuple[WorldModel, dict]:
    """Explore, train, then let the planner collect and train on; returns the model and its training facts.

    The planner that collects is `COLLECT`, whatever `[planner]` says.
    """
    started, say = time.perf_counter(), say or quiet
    total = settings.updates + settings.rounds * settings.round_updates
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    env = make_env(env_id)
    space = env.action_space
    env.reset(seed=settings.seed)
    uncopyable = _uncopyable(env)
    frontier: list | None = None if uncopyable else []
    if uncopyable:
        say(f"{env_id} cannot be restarted from copies of itself ({uncopyable}): every episode starts from a reset")

    def sticky_random(obs: np.ndarray, previous: Action | None) -> Action:
        keep = previous is not None and rng.random() >= 1 / settings.sticky
        return previous if keep else random_action(space, rng)

    episodes = collect(env, settings.explore_steps, sticky_random, settings.seed, settings.restarts, frontier, rng)
    box = isinstance(space, gym.spaces.Box)
    model = WorldModel(env.observation_space.shape[0], 0 if box else int(space.n), settings.latent_dim,
                       settings.hidden, action_dim=space.shape[0] if box else 0)
    if box:
        model.action_low.copy_(torch.as_tensor(space.low, dtype=torch.float32))
        model.action_high.copy_(torch.as_tensor(space.high, dtype=torch.float32))
    _fit_scales(model, episodes, settings.gamma)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=settings.lr)

    def training(start: int) -> Callable[[int], None]:  # updates done, of all of them
        return lambda done: say(f"training the {env_id} world model", done=start + done, total=total)

    losses = fit(model, opt, windows(episodes, settings.rollout, settings.gamma), settings, settings.updates, training(0))
    returns = []
    for round_ in range(settings.rounds):
        planner = Planner(model, dataclasses.replace(COLLECT, seed=settings.seed + round_), repeatable=False)

        def planned(obs: np.ndarray, previous: Action | None) -> Action:
            if rng.random() < EXPLORE_EPSILON:
                return random_action(space, rng)
            with torch.inference_mode():
                return planner.plan(model.encode(torch.as_tensor(obs, dtype=torch.float32))).action

        with one_thread():
            new = collect(env, settings.round_steps, planned, settings.seed + 2 * round_ + 1, 0.0, frontier, rng)
        returns.append(float(np.mean([ep.rewards.sum() for ep in new])))
        # Random play, every episode restarted from a rare state, now including where the planner went:
        # what happens beyond its plans.
        episodes += new + collect(env, settings.round_steps, sticky_random, settings.seed + 2 * round_ + 2, 1.0,
                                  frontier, rng)
        losses = fit(model, opt, windows(episodes, settings.rollout, settings.gamma), settings,
                     settings.round_updates, training(settings.updates + round_ * settings.round_updates))
    env.close()
    if not all(np.isfinite(list(losses.values()))):
        raise DmnError(f"training the {env_id} world model diverged (losses {losses}); try a lower [world] lr")
    meta = {"env": env_id, "settings": dataclasses.asdict(settings),
            "transitions": int(sum(len(ep.actions) for ep in episodes)), "episodes": len(episodes),
            "round_returns": returns, "losses": losses, "failure": bool(model.failure),
            "restarts": f"resets only: {uncopyable}" if uncopyable else "from snapshots",
            "train_seconds": round(time.perf_counter() - started, 1)}
    return model, meta


def collect(env: gym.Env, steps: int, choose: Callable[[np.ndarray, Action | None], Action], seed: int,
            restarts: float = 0.0, frontier: list | None = None,
            rng: np.random.Generator | None = None) -> list[Episode]:
    """Play whole episodes until at least `steps` transitions; `choose(obs, previous_action)` acts.

    A `restarts` share of the episodes starts from a snapshot of one of the rarest states seen so far
    instead of a reset (Go-Explore's trick): exploration pushes out, a little further each time, to
    states that play from a reset never reaches, such as a cart near the end of its track. Snapshots
    are deep copies of the environment, taken every few steps into `frontier` (pass one list to several
    calls to share them; None: an environment that cannot be copied, only ever reset).
    """
    rng = rng or np.random.default_rng(seed)
    if frontier is None:
        restarts = 0.0
    episodes, total = [], 0
    obs, _ = env.reset(seed=seed)
    while total < steps:
        playing = env
        if frontier and rng.random() < restarts:
            obs, snapshot = _rare(frontier, rng)
            playing = copy.deepcopy(snapshot)
        observations, actions, rewards, previous = [obs], [], [], None
        while True:
            if frontier is not None and len(actions) % SNAPSHOT_EVERY == 0:
                frontier.append((obs, copy.deepcopy(playing)))
            previous = choose(obs, previous)
            obs, reward, terminated, truncated, _ = playing.step(previous)
            observations.append(obs)
            actions.append(previous)
            rewards.append(reward)
            if terminated or truncated:
                break
        kind = np.float32 if isinstance(env.action_space, gym.spaces.Box) else np.int64
        episodes.append(Episode(np.asarray(observations, np.float32), np.asarray(actions, kind),
                                np.asarray(rewards, np.float32), bool(terminated)))
        total += len(actions)
        obs, _ = env.reset()
    return episodes


def _uncopyable(env: gym.Env) -> str | None:
    """Why copies of `env` (just reset) cannot stand in for it, or None when they can: some environments hold
    what cannot be copied (a simulator handle), and some copy without error and then fail at their first
    step (Box2D's). One copy takes a step to find out; `env` itself is untouched."""
    try:
        copy.deepcopy(env).step(random_action(env.action_space, np.random.default_rng(0)))
    except Exception as exc:  # noqa: BLE001 - whatever the environment raises
        return f"{type(exc).__name__} {exc}".strip()
    return None


def _rare(frontier: list, rng: np.random.Generator) -> tuple[np.ndarray, gym.Env]:
    """A snapshot from a rarely visited cell (Go-Explore): cells are half-standard-deviation boxes of the
    observation, picked with weight 1/sqrt(snapshots in it), so exploration keeps pushing at the edge of the known."""
    seen = np.asarray([obs for obs, _ in frontier])
    cells = np.floor((seen - seen.mean(0)) / (seen.std(0) + 1e-6) * 2).astype(np.int32)
    _, cell, visits = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    weight = visits[cell.ravel()] ** -0.5
    return frontier[int(rng.choice(len(frontier), p=weight / weight.sum()))]


def windows(episodes: list[Episode], rollout: int, gamma: float) -> dict[str, torch.Tensor]:
    """Every step of every episode as the start of a `rollout`-step window (steps past the end are masked).

    The value target of a step is the discounted return from the observation it leads to; near the end
    of an episode cut by the time limit that return is unknown, so it is masked too.
    """
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "actions", "next", "rewards", "done", "value",
                                                          "mask", "value_mask")}
    reach = int(np.ceil(np.log(0.01) / np.log(gamma)))  # steps beyond which less than 1% of the return is left
    for ep in episodes:
        steps = len(ep.actions)
        to_go = np.zeros(steps, np.float32)  # return from the observation after step t
        for t in range(steps - 2, -1, -1):
            to_go[t] = ep.rewards[t + 1] + gamma * to_go[t + 1]
        done = np.zeros(steps, np.float32)
        done[-1] = ep.terminated
        known = np.ones(steps, bool) if ep.terminated else np.arange(steps) < steps - reach
        index = np.arange(steps)[:, None] + np.arange(rollout)[None, :]
        mask = index < steps
        index = np.minimum(index, steps - 1)
        parts["obs"].append(ep.obs[:steps])
        parts["actions"].append(ep.actions[index])
        parts["next"].append(ep.obs[index + 1])
        parts["rewards"].append(ep.rewards[index])
        parts["done"].append(done[index])
        parts["value"].append(to_go[index])
        parts["mask"].append(mask.astype(np.float32))
        parts["value_mask"].append((mask & known[index]).astype(np.float32))
    return {k: torch.from_numpy(np.concatenate(v)) for k, v in parts.items()}


def fit(model: WorldModel, opt: torch.optim.Optimizer, data: dict[str, torch.Tensor], settings: WorldSettings,
        updates: int, progress: Callable[[int], None] | None = None) -> dict[str, float]:
    """`updates` gradient steps on random windows of `data`; returns the last step's loss terms. Every 50
    updates, `progress` is told how many were done."""
    rows, (steps, obs_dim), latent = len(data["obs"]), data["next"].shape[1:], settings.latent_dim
    terms: dict[str, torch.Tensor] = {}
    for update in range(updates):
        if progress and update % 50 == 0:
            progress(update)
        pick = torch.randint(rows, (settings.batch,))
        b = {k: v[pick] for k, v in data.items()}
        z = model.encode(b["obs"])
        target = model.encode_target(b["next"].reshape(-1, obs_dim)).reshape(-1, steps, latent)
        encoded = model.encode(b["next"].reshape(-1, obs_dim)).reshape(-1, steps, latent)
        predicted, prediction, heads = z, 0.0, 0.0
        for k in range(steps):
            mask, value_mask = b["mask"][:, k], b["value_mask"][:, k]
            predicted = model.step(predicted, b["actions"][:, k])
            prediction += _masked(((predicted - target[:, k]) ** 2).mean(-1), mask)
            for latent_k in (predicted, encoded[:, k]):
                reward, done, value = model.heads(latent_k, b["actions"][:, k])
                heads += _masked(((reward - b["rewards"][:, k]) / model.reward_scale) ** 2, mask)
                heads += _masked(F.binary_cross_entropy_with_logits(done, b["done"][:, k], reduction="none"), mask)
                heads += 5 * _masked(((value - b["value"][:, k]) / model.value_scale) ** 2, value_mask)
        variance, covariance = _vicreg(z)
        terms = {"prediction": prediction / steps, "heads": heads / steps, "variance": variance,
                 "covariance": covariance}
        loss = (terms["prediction"] + 0.5 * terms["heads"] + settings.variance_weight * variance
                + settings.covariance_weight * covariance)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_target(settings.ema)
    return {k: round(float(v.detach()), 5) for k, v in terms.items()}


def _masked(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def _vicreg(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg's variance (every dimension's std at least 1) and covariance (off-diagonal terms near 0) terms."""
    variance = F.relu(1 - torch.sqrt(z.var(0) + 1e-4)).mean()
    centred = z - z.mean(0)
    cov = centred.T @ centred / (len(z) - 1)
    return variance, (cov.fill_diagonal_(0) ** 2).sum() / z.shape[1]


def _fit_scales(model: WorldModel, episodes: list[Episode], gamma: float) -> None:
    """Set the normalisers from the exploration data (they stay fixed afterwards, as the encoder learns on them)."""
    obs = np.concatenate([ep.obs for ep in episodes])
    rewards = np.concatenate([ep.rewards for ep in episodes])
    model.obs_mean.copy_(torch.from_numpy(obs.mean(0)))
    model.obs_std.copy_(torch.from_numpy(obs.std(0) + 1e-6))
    model.reward_scale.fill_(max(float(np.abs(rewards).max()), 1e-6))
    model.value_scale.fill_(float(model.reward_scale) / (1 - gamma))  # the largest discounted return possible
    model.failure.fill_(bool(rewards.mean() > 0))  # ending early forfeits reward: ending is failure


def _save(folder: Path, model: WorldModel, meta: dict) -> None:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    weights = buffer.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "model.pt", weights)
    meta = {**meta, "format": MODEL_FORMAT, "sha256": hashlib.sha256(weights).hexdigest(),
            "obs_dim": model.obs_mean.shape[0], "n_actions": model.n_actions, "action_dim": model.action_dim}
    write_atomic(folder / "meta.json", json.dumps(meta, indent=2).encode())  # last: its presence means complete


def _load(folder: Path) -> World:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        weights = (folder / "model.pt").read_bytes()
        if hashlib.sha256(weights).hexdigest() != meta["sha256"]:
            raise ValueError("model.pt does not match its checksum")
        settings = meta["settings"]
        model = WorldModel(meta["obs_dim"], meta["n_actions"], settings["latent_dim"], settings["hidden"],
                           meta.get("action_dim", 0))
        model.load_state_dict(torch.load(io.BytesIO(weights), weights_only=True))  # weights only: nothing unpickled
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise DmnError(f"the cached world model in {folder} is damaged ({exc}); delete that folder to train it "
                       "again") from None
    return World(meta["env"], model, f"jepa-{meta['sha256'][:12]}", meta)
