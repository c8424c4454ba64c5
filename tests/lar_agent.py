"""A small JEPA-like agent run by the real lar-engine, to produce genuine Lár audit files for the tests.

The graph: encode (observation -> latent) -> imagine (one candidate action through a toy
action-conditioned predictor, scored against a goal latent) -> RouterNode (more candidates? imagine
again : act) -> act (best candidate; the world answers with a reward) -> RouterNode (done? : encode).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dmn.integrations.lar import import_lar, latent

lar = import_lar()


def run_agent(log_dir: Path, *, runs: int = 2, steps: int = 3, dim: int = 8, actions: int = 3, tensors: bool = True,
              hmac_secret: str | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Run `runs` episodes; returns, per run, what the agent did (for comparing with what dmn ingests)."""
    from dmn.integrations.lar import TensorAuditLogger

    rng = np.random.default_rng(seed)
    project = rng.standard_normal((dim, 2)).astype(np.float32)
    dynamics = rng.standard_normal((actions, dim, dim)).astype(np.float32) * 0.3
    goal = rng.standard_normal(dim).astype(np.float32)
    vec = latent if tensors else (lambda z: [float(x) for x in np.asarray(z, np.float32)])
    history: list[dict[str, Any]] = []

    def encode(state: Any) -> None:
        z = np.tanh(project @ np.asarray(state.get("obs"), np.float32))
        state.set("latent", vec(z))
        state.set("pending", list(range(actions)))
        state.set("best", None)
        for key in ("action_taken", "reward"):  # Lár's diff records changes only: clear what each cycle sets anew
            state.delete(key)
        history[-1]["latents"].append(np.asarray(z, np.float32))

    def imagine(state: Any) -> None:
        pending = list(state.get("pending"))
        action = pending.pop(0)
        z = np.asarray(state.get("latent"), np.float32)
        predicted = np.tanh(dynamics[action] @ z)
        score = float(-np.linalg.norm(predicted - goal))
        state.set("pending", pending)
        state.set("candidate_action", action)
        state.set("predicted_latent", vec(predicted))
        state.set("score", score)
        state.set("vetoed", score < -4.0)
        best = state.get("best")
        if best is None or score > best[1]:
            state.set("best", [action, score])

    def act(state: Any) -> None:
        action = state.get("best")[0]
        obs = np.asarray(state.get("obs"), np.float32) + np.float32(0.1) * (action - 1)
        reward = float(-np.abs(obs).sum())
        state.set("obs", [float(x) for x in obs])
        state.set("action_taken", action)
        state.set("reward", reward)
        state.set("t", state.get("t") + 1)
        history[-1]["actions"].append(action)
        history[-1]["rewards"].append(reward)

    encode_node = lar.FunctionalNode(encode)
    imagine_node = lar.FunctionalNode(imagine)
    act_node = lar.FunctionalNode(act)
    finish = lar.AddValueNode("finished", True)
    deliberate = lar.RouterNode(lambda s: "imagine" if s.get("pending") else "act", {"imagine": imagine_node, "act": act_node})
    next_step = lar.RouterNode(lambda s: "done" if s.get("t") >= steps else "again", {"again": encode_node, "done": finish})
    encode_node.next_node, imagine_node.next_node, act_node.next_node = imagine_node, deliberate, next_step

    logger = TensorAuditLogger(str(log_dir), hmac_secret=hmac_secret) if tensors else lar.AuditLogger(str(log_dir), hmac_secret=hmac_secret)
    for _ in range(runs):
        history.append({"latents": [], "actions": [], "rewards": []})
        executor = lar.GraphExecutor(logger=logger)
        obs = rng.standard_normal(2).tolist()
        for _step in executor.run_step_by_step(encode_node, {"obs": obs, "t": 0}, max_steps=10_000):
            pass
    return history
