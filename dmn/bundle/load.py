"""A published bundle, loaded for lookups: what the System 1 client serves and tests check.

Loading verifies the manifest's checksums (and signature, with DMN_SIGNING_KEY) first; nothing is
unpickled (FAISS indexes are deserialised from bytes, the policy's arrays read with allow_pickle=False).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dmn.bundle import publish
from dmn.bundle.decide import POLICY_KEYS, Answers, Rule, table_columns
from dmn.errors import DmnError
from dmn.home import Home


@dataclass
class Bundle:
    manifest: dict[str, Any]
    index: faiss.Index
    """Search index over the situations' centroids (PCA inside when the night used it)."""
    table: pa.Table
    outcomes: pa.Table
    outcome_index: faiss.Index
    policy: dict[str, np.ndarray]
    candidates: pa.Table | None
    """A continuous world's recorded candidates per situation (cluster, action, score, vetoed, outcome), for
    `Reflexes.imagine`; None in a discrete world, whose table holds them per action."""
    rule: Rule
    """The decision rule, prepared with the manifest's thresholds: what the night measured."""

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def actions(self) -> list[str]:
        """The action labels of a discrete world; empty in a continuous one."""
        return self.manifest["actions"]

    @property
    def action_dim(self) -> int:
        """The length of a continuous world's action vectors; 0 in a discrete world."""
        return self.manifest.get("action_dim", 0)

    def answer(self, states: np.ndarray) -> Answers:
        """System 1's answers for (n, d) latent states, exactly as the night evaluated them."""
        return self.rule.decide(states)


def load(home: Home, world: str, version: str | None = None) -> Bundle:
    """The published (or the given) bundle of `world`, verified; raises DmnError when there is none or it is damaged."""
    version = version or publish.current(home, world)
    if version is None:
        raise DmnError(f"no bundle published for world {world!r}")
    if not publish.VERSION.fullmatch(version):  # a name, never a path: nothing outside the world's folder
        raise DmnError(f"{version!r} is not a bundle version (they look like v000001)")
    return load_path(publish.folder(home, world) / version)


def load_path(path: Path) -> Bundle:
    manifest = publish.verify(path)
    if manifest.get("format") != publish.BUNDLE_FORMAT:
        raise DmnError(f"bundle {path} has format {manifest.get('format')}; this dmn serves format "
                       f"{publish.BUNDLE_FORMAT} (the next night publishes one)")
    try:
        return from_files(manifest, {name: (path / name).read_bytes() for name in manifest["files"]})
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise DmnError(f"bundle {path} cannot be loaded ({exc})") from None


def from_files(manifest: dict[str, Any], files: dict[str, bytes]) -> Bundle:
    """A bundle from its manifest and its files' bytes, unverified: what `load_path` reads, or what a night
    would publish (`dmn consolidate --dry-run` compares it with the current one before anything is written)."""
    index = faiss.deserialize_index(np.frombuffer(files["situations.faiss"], np.uint8))
    outcome_index = faiss.deserialize_index(np.frombuffer(files["outcomes.faiss"], np.uint8))
    table = pq.read_table(io.BytesIO(files["table.parquet"]))
    with np.load(io.BytesIO(files["policy.npz"]), allow_pickle=False) as npz:
        stored = {"low": np.zeros(0, np.float32), "high": np.zeros(0, np.float32),  # bundles from before
                  **{k: npz[k] for k in npz.files}}                              # vector actions: none
    policy = {k: stored[k] for k in POLICY_KEYS}
    rule = Rule.prepare(index, table_columns(table, manifest["actions"]), policy, manifest["thresholds"],
                        manifest["min_support"], manifest["policy_reach"])
    outcomes = pq.read_table(io.BytesIO(files["outcomes.parquet"]))
    candidates = pq.read_table(io.BytesIO(files["candidates.parquet"])) if "candidates.parquet" in files else None
    return Bundle(manifest, index, table, outcomes, outcome_index, policy, candidates, rule)
