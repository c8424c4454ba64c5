"""Bundles: what a night publishes and an agent loads.

    decide     System 1's decision rule, the one that the night evaluates and the client serves
    publish    versioned folders, the CURRENT pointer, signatures, rollback
    load       a published bundle, verified, ready to answer

Agent side: numpy, pyarrow and FAISS only.
"""
