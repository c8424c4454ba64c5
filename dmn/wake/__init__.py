"""Wake: the agent's side at run time.

    logger   `EpisodeLogger`: deliberation, decisions and outcomes into the inbox, off the hot path
    client   `Reflexes`: ask System 1 first; None means deliberate

Agent side: what `pip install dmn` brings (numpy, pyarrow, FAISS); never torch, DuckDB or matplotlib.
"""
