"""Kill points: the moments of ingest, compaction, the night and publishing where a crash would hurt most.

A dmn process whose environment has `DMN_KILL_AT=<point>` (or `<point>:<n>`, its n-th pass) SIGKILLs
itself there, as a power cut would. The crash tests kill at every point in `POINTS` and check that
nothing was lost or duplicated and that readers only ever see whole bundles (tests/test_reliability.py,
benchmarks/crash.py). Unset, a point costs one environment lookup.

    DMN_KILL_AT=ingest.committed dmn ingest      # dies after the commit, before the roll-forward
"""

from __future__ import annotations

import os
import signal
from collections import Counter

POINTS = {
    "ingest.recovered": "the ingest lock is held and batches cut by an earlier crash are recovered",
    "ingest.read": "a file has been read into the batch",
    "ingest.staged": "a Parquet file of the batch is in staging",
    "ingest.commit": "every file of the batch is staged; the manifest is not written",
    "atomic.written": "write_atomic's temporary file is written and fsynced, not yet renamed",
    "ingest.committed": "the manifest is in the catalog; the batch's files are still in staging",
    "ingest.rolled": "a file of a committed batch has moved from staging into the lake",
    "compact.staged": "a compaction's merged files are staged; its manifest is not written",
    "compact.committed": "a compaction's manifest is in the catalog; the manifests it replaces are still there",
    "job.ingested": "a job's ingest stage is done; its next stage has not begun",
    "consolidate.select": "the night's experience is selected and split",
    "consolidate.cluster": "situations are clustered",
    "consolidate.outcomes": "outcome types are clustered",
    "consolidate.table": "the heuristic table is built",
    "consolidate.policy": "the policy is trained",
    "consolidate.evaluate": "the held-out evaluation is done; the gate has not decided",
    "publish.staged": "a bundle's files are written in staging, not yet moved into place",
    "publish.placed": "the bundle is in place; CURRENT still names the old one",
    "publish.switched": "CURRENT names the new bundle; old bundles are not pruned yet",
    "publish.pruned": "an old bundle has been removed",
    "consolidate.publish": "the bundle is published; the run is not yet recorded",
    "consolidate.recorded": "the night's run record is written",
}

_passes: Counter[str] = Counter()


def point(name: str) -> None:
    """Die here by SIGKILL if `DMN_KILL_AT` names this point (and this pass of it)."""
    target = os.environ.get("DMN_KILL_AT")
    if not target:
        return
    assert name in POINTS, name
    wanted, _, nth = target.partition(":")
    if wanted == name:
        _passes[name] += 1
        if _passes[name] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
