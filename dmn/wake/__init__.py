"""Wake: the agent's side at run time.

    logger   `EpisodeLogger`: deliberation, decisions and outcomes into the inbox, off the hot path
    client   `Reflexes`: ask System 1 first; None means deliberate
    decider  `Decider`: one call a step: System 1, else the agent's planner, logged as the night expects

Agent side: what `pip install dmn` brings (numpy, pyarrow, FAISS); never torch, DuckDB or matplotlib.
"""
