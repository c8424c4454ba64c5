"""The Lár Trio, runnable: a JEPA world simulator that imagines, Lár's spine whose System 2 router vetoes
dangerous imagined states, and dmn turning the day's deliberation into reflexes overnight.

    python examples/lar_trio.py --home dmn-home --env CartPole-v1 --episodes 10

The graph, with real Lár nodes around the reference world model (`dmn.worlds`), one run per episode:

    encode ─▶ System1 ─reflex──────────────────────────────────────────────▶ act ─▶ done? ─▶ encode
                 └─imagine─▶ imagine ─▶ more? ─▶ choose ─▶ Veto ─act──────────▲
                               ▲──────────┘        ▲────replan─┘

Runs are logged through `TensorAuditLogger`, signed, into the home's inbox. Day 0 deliberates (there is
no bundle yet); the night ingests the runs (verifying their signatures) and consolidates them; on day 1
the System 1 router answers first. The home is `--home`, else $DMN_HOME, else ./dmn-home.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import secrets
import time

import numpy as np
from gymnasium.wrappers import TimeLimit

from dmn import Home, Reflexes
from dmn.integrations.lar import System1, TensorAuditLogger, Veto, import_lar, latent
from dmn.ops import jobs
from dmn.progress import Printed
from dmn.worlds.agent import random_returns
from dmn.worlds.plan import Planner, one_thread
from dmn.worlds.settings import ReferenceSettings
from dmn.worlds.train import World, load_world, make_env

lar = import_lar()


def trio(world: World, planner: Planner, reflexes: Reflexes, veto: Veto, env) -> tuple:
    """The Trio's graph: (its first node, a tally of what System 1 routed and of the rewards the actuators got)."""
    tally = {"reflex": 0, "imagine": 0, "reward": 0.0}
    system1 = System1(reflexes)

    def encode(state):  # the JEPA encoder; clear what each cycle sets anew (Lár's diff records changes only)
        state.set("latent", latent(world.encode(np.asarray(state.get("obs"), np.float32))))
        for key in ("action_taken", "reward", "pending", "imagined"):
            state.delete(key)

    def ask(state):
        route = system1(state)
        tally[route] += 1
        return route

    def imagine(state):  # the world simulator: one candidate per visit, the search run on the first
        pending = state.get("pending")
        if pending is None:
            plan = planner.plan(np.asarray(state.get("latent"), np.float32))
            danger = [c.ending if bool(world.model.failure) else 0.0 for c in plan.candidates]
            pending = [[c.action, c.score, latent(c.predicted), d] for c, d in zip(plan.candidates, danger)]
        action, score, predicted, danger = pending.pop(0)
        state.set("pending", pending)
        state.set("imagined", (state.get("imagined") or []) + [[action, score, predicted, danger]])
        state.set("candidate_action", action)
        state.set("predicted_latent", predicted)
        state.set("vetoed", veto.dangerous(predicted, danger))
        state.set("score", score)

    def more(state):  # clear the score: Lár's diff records changes only, and each candidate's must show
        state.delete("score")
        return "imagine" if state.get("pending") else "choose"

    def choose(state):  # the best imagined plan not refused yet (the veto judges it next)
        refused = veto.refused(state)
        options = [c for c in state.get("imagined") if c[0] not in refused] or state.get("imagined")
        action, _, predicted, danger = max(options, key=lambda c: c[1])
        state.set("plan_action", action)
        state.set("plan_latent", predicted)
        state.set("plan_danger", danger)

    def act(state):  # the actuators
        obs, reward, terminated, truncated, _ = env.step(state.get("action_taken"))
        state.set("obs", obs.tolist())
        state.set("reward", float(reward))
        tally["reward"] += float(reward)
        state.set("done", bool(terminated or truncated))

    nodes = {name: lar.FunctionalNode(f) for name, f in
             (("encode", encode), ("imagine", imagine), ("choose", choose), ("act", act))}
    finish = lar.AddValueNode("finished", True)
    nodes["encode"].next_node = lar.RouterNode(ask, {"reflex": nodes["act"], "imagine": nodes["imagine"]})
    nodes["imagine"].next_node = lar.RouterNode(more, {"imagine": nodes["imagine"], "choose": nodes["choose"]})
    nodes["choose"].next_node = lar.RouterNode(veto, {"act": nodes["act"], "replan": nodes["choose"]})
    nodes["act"].next_node = lar.RouterNode(lambda s: "done" if s.get("done") else "again",
                                            {"again": nodes["encode"], "done": finish})
    return nodes["encode"], tally


def day(home: Home, env_id: str, world: World, settings: ReferenceSettings, args: argparse.Namespace, seed: int,
        secret: str) -> dict:
    """Play `args.episodes` episodes through the Trio's graph, one Lár run each; returns the day's figures."""
    reflexes = Reflexes.open(f"{env_id}-trio", encoder=world.encoder, home=home, audit_rate=args.audit_rate, seed=seed)
    env, planner = make_env(env_id), Planner(world.model, settings.planner)
    if args.max_steps:
        env = TimeLimit(env, args.max_steps)
    veto = Veto(settings.planner.veto, replans=env.action_space.n - 1)  # every action, then the least dangerous
    start, tally = trio(world, planner, reflexes, veto, env)
    logger = TensorAuditLogger(home.inbox, hmac_secret=secret, world=f"{env_id}-trio", encoder=world.encoder)
    returns, began = [], time.perf_counter()
    with one_thread():
        for episode in range(args.episodes):
            obs, _ = env.reset(seed=seed + episode)
            executor = lar.GraphExecutor(logger=logger, max_node_fatigue=10**9)  # an episode visits each node often
            tally["reward"] = 0.0
            with contextlib.redirect_stdout(io.StringIO()):  # Lár narrates every node
                for step in executor.run_step_by_step(start, {"obs": obs.tolist()}, max_steps=10**9):
                    if step.get("outcome") == "error":
                        raise RuntimeError(f"the Trio's {step['node']} failed: {step.get('error')}")
            returns.append(tally["reward"])
    decisions = tally["reflex"] + tally["imagine"]
    return {"return": float(np.mean(returns)), "system1": tally["reflex"] / decisions,
            "ms": (time.perf_counter() - began) * 1000 / decisions, "version": reflexes.version}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None, help="The dmn home (default: $DMN_HOME, else ./dmn-home).")
    parser.add_argument("--env", default="CartPole-v1", help="A Gymnasium environment with discrete actions.")
    parser.add_argument("--episodes", type=int, default=10, help="Episodes (Lár runs) per day.")
    parser.add_argument("--max-steps", type=int, default=None, help="Cut episodes at this many steps "
                        "(default: the environment's own limit).")
    parser.add_argument("--audit-rate", type=float, default=0.03, help="Share of System 1's answers audited.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    home = Home.resolve(args.home)
    if not hasattr(make_env(args.env).action_space, "n"):
        parser.error(f"{args.env} has continuous actions: this example's choose and veto nodes compare discrete plans")
    # Runs are signed; the night verifies them with the same secret (`[lar] hmac_secret` would do as well).
    secret = os.environ.setdefault("DMN_LAR_HMAC_SECRET", secrets.token_hex(16))
    settings = ReferenceSettings.load(home)
    world = load_world(home, args.env, settings.world, on_train=Printed())
    print("| day | return | normalised | System 1 share | ms per decision | night |")
    print("| --- | --- | --- | --- | --- | --- |")
    first = None
    for number in range(2):
        seed = args.seed + number * args.episodes
        figures = day(home, args.env, world, settings, args, seed, secret)
        floor = float(np.mean(random_returns(args.env, args.episodes, seed, args.max_steps)))  # the same episodes
        first = first or (figures["return"], floor)
        normalised = (figures["return"] - floor) / (first[0] - first[1])
        night = "-" if number else jobs.run(home, jobs.nightly(f"{args.env}-trio"))[0]
        said = night if night == "-" else f"{night.status} {night.version or night.reason}"
        print(f"| {number} | {figures['return']:.1f} | {normalised:.2f} | {figures['system1']:.1%} | "
              f"{figures['ms']:.2f} | {said} |")

if __name__ == "__main__":
    main()
