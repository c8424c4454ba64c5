"""Worlds that produce deliberation logs, to see dmn work, measure it and test it without an agent of your own.

    synthetic.py  Gaussian situations with a known best action (numpy only): tests and benchmarks
    settings.py   [world] and [planner] of dmn.toml
    model.py      the reference world model: encoder, EMA target encoder, action-conditioned predictor, heads
    train.py      exploration, JEPA training, data aggregation, and the model cache in the home
    plan.py       System 2: a cross-entropy-method planner in latent space
    agent.py      the agent loop that logs everything through `dmn.EpisodeLogger`
    demo.py       days of acting and nights of consolidation

The reference world (all but synthetic) is a small JEPA world-model agent on any Gymnasium environment
with vector observations and discrete actions; it needs the `worlds` extra (gymnasium, torch).

    >>> from dmn.worlds.agent import run  # doctest: +SKIP
    >>> run(Home.resolve(), "CartPole-v1", episodes=20).to_dict()  # doctest: +SKIP
"""
