"""Sleep: the night that turns a world's System 2 deliberation into System 1 reflexes.

    experience   the labelled steps of one world, read from the lake (a `Window` on it)
    states       their latent states: bounded samples taken, row-wise functions mapped over them
    distributed  the same reading, and the states kept and mapped, by tasks on a Ray cluster
                 (`[engine] kind = "ray"`): the same bundle
    cluster      situations and outcome types, FAISS k-means
    table        per situation: what System 2 did, how surely, what it avoided and imagined
    policy       the small network distilled from System 2 (model), and its training
    evaluate     held-out splits, thresholds for the precision target, the figures
    night        `consolidate`: all of it, top to bottom, then the gate and the publish

Server side: needs the `night` extra (DuckDB, scikit-learn, torch).
"""
