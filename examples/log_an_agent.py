"""A toy world-model agent that logs its System 2 deliberation with dmn.EpisodeLogger.

    python examples/log_an_agent.py                  # 20 episodes into ./dmn-home/inbox
    python examples/log_an_agent.py --episodes 200 --home /data/dmn

The agent is a stand-in for a JEPA planner: it encodes a 2-D position into a latent, imagines
each of four moves with an action-conditioned predictor, scores the imagined latent by how close
it is to a goal, vetoes moves that would leave the arena, and takes the best one.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dmn import EpisodeLogger

MOVES = ["up", "down", "left", "right"]
STEP = {"up": (0, 1), "down": (0, -1), "left": (-1, 0), "right": (1, 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=None, help="dmn home (default: $DMN_HOME, else ./dmn-home)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--dim", type=int, default=32, help="latent dimension")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    encoder = rng.standard_normal((args.dim, 2)).astype(np.float32) / np.sqrt(2)

    def encode(pos: np.ndarray) -> np.ndarray:
        return np.tanh(encoder @ (pos / 5.0)).astype(np.float32)

    goal = encode(np.array([0.0, 0.0]))
    with EpisodeLogger(args.home, world="gridworld", encoder="toy-encoder@1", agent="example") as log:
        for _ in range(args.episodes):
            log.episode(meta={"seed": args.seed})
            pos, total = rng.integers(-5, 6, size=2).astype(np.float32), 0.0
            for step in range(30):
                z = encode(pos)
                started = time.perf_counter()
                best, best_score = None, -np.inf
                for move in MOVES:  # System 2: imagine every move, score the imagined future
                    t0 = time.perf_counter()
                    nxt = pos + np.array(STEP[move], np.float32)
                    predicted = encode(nxt)
                    score = float(-np.linalg.norm(predicted - goal))
                    vetoed = bool(np.abs(nxt).max() > 5)
                    log.simulation(step, z, move, score, predicted=predicted, vetoed=vetoed,
                                   cost_ms=(time.perf_counter() - t0) * 1e3)
                    if not vetoed and score > best_score:
                        best, best_score = move, score
                log.decision(step, z, best, source="system2", latency_ms=(time.perf_counter() - started) * 1e3)
                pos = pos + np.array(STEP[best], np.float32)
                done = not pos.any()
                reward = 10.0 if done else -1.0
                total += reward
                log.outcome(step, reward=reward, done=done, success=done or None)
                if done:
                    break
            log.end(return_=total, success=not pos.any())
    print(f"logged {args.episodes} episodes into {log.home.inbox}")


if __name__ == "__main__":
    main()
