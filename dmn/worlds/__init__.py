"""The reference world: a small JEPA world-model agent on any Gymnasium environment with vector
observations and discrete actions (extra `worlds`).

    model.py   the world model: encoder, EMA target encoder, action-conditioned predictor, heads
    train.py   exploration, JEPA training, data aggregation, and the model cache in the home
    plan.py    System 2: a cross-entropy-method planner in latent space
    agent.py   the agent loop that logs everything through `dmn.EpisodeLogger`
    demo.py    days of acting and nights of consolidation

    >>> from dmn.worlds import run  # doctest: +SKIP
    >>> run(Home.resolve(), "CartPole-v1", episodes=20).to_dict()  # doctest: +SKIP
"""

from dmn.worlds.agent import RunReport, reflexes_for, run
from dmn.worlds.demo import Day, demo
from dmn.worlds.plan import Plan, Planner
from dmn.worlds.train import World, load_world, make_env

__all__ = ["Day", "Plan", "Planner", "RunReport", "World", "demo", "load_world", "make_env", "reflexes_for", "run"]
