"""The lake: agents' logs in, episodes out.

    discover, plan    which files, and which of their bytes, are new (from the catalog's ledger)
    read              complete lines from JSONL, gzip, Lár audit files and dmn Parquet
    parse, rules      one DuckDB pass per chunk: every record checked against `dmn.records`
    resolve           the rules across records: episodes known, repeats, latent dimensions
    commit            partitioned Parquet, quarantine and ledger, as one atomic batch
    compact           runs of small batches merged into one, so that history stays fast to read
    distributed       the same stages as tasks on a Ray cluster (`[engine] kind = "ray"`), one batch
    store             the catalog, the views SQL reads, recovery after a crash

`dmn.lake.ingest.ingest` runs the pipeline. Server side: needs the `night` extra (DuckDB).
"""
