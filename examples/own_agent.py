"""Bring your own agent: a toy world model and planner (numpy only) behind dmn's one call a step.

A point moves in the square [-1, 1]^2 towards the goal at the origin. Its encoder is a fixed linear
projection to 16 dimensions, its world model predicts the next latent (z + the move's image), and its
planner imagines each of the four moves, scores the imagined distance to the goal and vetoes leaving
the square. One day of deliberation, a night of consolidation, then a day where System 1 answers first.

    python examples/own_agent.py --home dmn-home --episodes 20
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dmn import Candidate, Decider, Home, Plan
from dmn.ops import jobs

MOVES = np.array([[0, 0.1], [0, -0.1], [-0.1, 0], [0.1, 0]])  # up, down, left, right
ENCODE = np.random.default_rng(0).standard_normal((16, 2))  # the encoder: position -> latent
DECODE = np.linalg.pinv(ENCODE)


def planner(z: np.ndarray, proposal: object) -> Plan:
    """System 2: imagine every move in latent space; the best is the one whose future is nearest the goal."""
    time.sleep(0.002)  # stands for a real world model's cost
    imagined = [z + ENCODE @ move for move in MOVES]  # the world model
    candidates = [Candidate(a, score=-float(np.linalg.norm(DECODE @ p)), predicted=p,
                            vetoed=bool(np.abs(DECODE @ p).max() > 1)) for a, p in enumerate(imagined)]
    best = max((c for c in candidates if not c.vetoed), key=lambda c: c.score)
    return Plan(best.action, candidates)


def day(home: Home, number: int, episodes: int) -> None:
    rng, returns, system1 = np.random.default_rng(number), [], []
    with Decider.open("toy", encoder="toy-projection@1", home=home, audit_rate=0.05, seed=number) as decider:
        for _ in range(episodes):
            decider.episode()
            position, total = rng.uniform(-0.9, 0.9, 2), 0.0
            for step in range(30):
                decision = decider.decide(step, (ENCODE @ position).astype(np.float32), planner)
                position = np.clip(position + MOVES[decision.action] + rng.normal(0, 0.01, 2), -1, 1)
                reward = -float(np.linalg.norm(position))
                decider.log.outcome(step, reward=reward, done=step == 29)
                total += reward
                system1.append(decision.source == "system1")
            decider.log.end(return_=total)
            returns.append(total)
    print(f"day {number}: mean return {np.mean(returns):.2f}, System 1 served {np.mean(system1):.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None, help="The dmn home (default: $DMN_HOME, else ./dmn-home).")
    parser.add_argument("--episodes", type=int, default=20, help="Episodes per day.")
    args = parser.parse_args()
    home = Home.resolve(args.home)
    day(home, 0, args.episodes)
    night = jobs.run(home, jobs.nightly("toy"))[0]
    print(f"night: {night.status} {night.version or night.reason or ''}")
    day(home, 1, args.episodes)


if __name__ == "__main__":
    main()
