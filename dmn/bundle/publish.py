"""Versioned bundles: what a night publishes and System 1 loads.

    <home>/bundles/<world>/
        v000001/    manifest.json, table.parquet, outcomes.parquet, situations.faiss, outcomes.faiss, policy.npz
        v000002/
        CURRENT     the name of the published version, replaced by a rename

A bundle is written in full under `<home>/tmp`, fsynced, renamed into place, and only then named by
CURRENT: a reader sees the old bundle or the new one, never a mix. Published folders are never
changed. The manifest lists every file's SHA-256; with `DMN_SIGNING_KEY` set it is also signed
(HMAC-SHA256 over the manifest without its signature).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from dmn import faults
from dmn.errors import DmnError
from dmn.home import Home, fsync, write_atomic

BUNDLE_FORMAT = 2
"""2: the policy gives each action its own chance of being right (logistic outputs), and the table answers
within its situations' cores. A bundle of another format is refused when loaded."""
VERSION = re.compile(r"v(\d{6})")
STAGING_PREFIX = "bundle-"
LOCK_WAIT = 60.0
"""Seconds a publish or rollback waits for another one to finish (each takes well under a second)."""


def folder(home: Home, world: str) -> Path:
    return home.bundles / quote(world, safe="")


def current(home: Home, world: str) -> str | None:
    """The published version of `world`, or None."""
    try:
        return (folder(home, world) / "CURRENT").read_text().strip() or None
    except FileNotFoundError:
        return None


def versions(home: Home, world: str) -> list[str]:
    """The bundle versions kept for `world`, oldest first."""
    base = folder(home, world)
    return sorted(p.name for p in base.iterdir() if VERSION.fullmatch(p.name)) if base.is_dir() else []


def publish(home: Home, world: str, files: dict[str, bytes], manifest: dict[str, Any], keep: int) -> str:
    """Write a new bundle of `files` with `manifest`, make it current, prune to the newest `keep`; returns its version.

    Publishing and rolling back hold the home's "publish" lock, so versions are not raced for and
    CURRENT never names a bundle being pruned.
    """
    with home.lock("publish", wait=LOCK_WAIT):
        return _publish(home, world, files, manifest, keep)


def _publish(home: Home, world: str, files: dict[str, bytes], manifest: dict[str, Any], keep: int) -> str:
    base, staging, version = folder(home, world), home.tmp / f"{STAGING_PREFIX}{uuid.uuid4().hex}", None
    try:
        base.mkdir(parents=True, exist_ok=True)
        _sweep(home, base)
        existing = versions(home, world)
        version = f"v{int(existing[-1][1:]) + 1 if existing else 1:06d}"
        staging.mkdir(parents=True)
        for name, data in files.items():
            with open(staging / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        manifest = {**manifest, "format": BUNDLE_FORMAT, "world": world, "version": version,
                    "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}
        key = os.environ.get("DMN_SIGNING_KEY")
        if key:
            manifest["signature"] = _sign(manifest, key)
        write_atomic(staging / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode())
        fsync(staging)
        faults.point("publish.staged")
        os.rename(staging, base / version)
        fsync(base)
        faults.point("publish.placed")
        switch(home, world, version)
    except (OSError, DmnError) as exc:  # a full or read-only disk: leave no staging, and no bundle never made current
        shutil.rmtree(staging, ignore_errors=True)
        if version is not None and current(home, world) != version:
            shutil.rmtree(base / version, ignore_errors=True)
        raise DmnError(f"cannot publish {'bundle ' + version if version else 'a bundle'} of {world!r}: "
                       f"{exc.strerror if isinstance(exc, OSError) else exc}") from None
    faults.point("publish.switched")
    for old in versions(home, world)[:-keep]:
        if old != version:
            shutil.rmtree(base / old, ignore_errors=True)
            faults.point("publish.pruned")
    return version


def _sweep(home: Home, base: Path) -> None:
    """Remove what a publish cut short by a crash left: its staging folder, a temporary CURRENT."""
    for staging in home.tmp.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(staging, ignore_errors=True)
    for leftover in base.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)


def switch(home: Home, world: str, version: str) -> None:
    """Make `version` (a complete, verified bundle) the one readers load."""
    verify(folder(home, world) / version)
    write_atomic(folder(home, world) / "CURRENT", version.encode())


def rollback(home: Home, world: str, to: str | None = None) -> str:
    """Publish an older kept bundle again: `to`, or the one before the current. Returns the version now current.

    >>> rollback(Home.resolve(), "CartPole-v1")  # doctest: +SKIP
    'v000003'
    """
    with home.lock("publish", wait=LOCK_WAIT):
        return _rollback(home, world, to)


def _rollback(home: Home, world: str, to: str | None) -> str:
    kept, now = versions(home, world), current(home, world)
    if not kept:
        raise DmnError(f"no bundles for world {world!r}")
    if to is None:
        older = [v for v in kept if now is None or v < now]
        if not older:
            raise DmnError(f"{world!r} has no bundle older than {now} to roll back to (kept: {', '.join(kept)})")
        to = older[-1]
    elif VERSION.fullmatch(to) is None and to.isdigit():
        to = f"v{int(to):06d}"
    if to not in kept:
        raise DmnError(f"{world!r} has no bundle {to!r}; kept: {', '.join(kept)}")
    switch(home, world, to)
    return to


def verify(path: Path) -> dict[str, Any]:
    """The manifest of the bundle at `path`, after checking every file against it (and its signature
    when DMN_SIGNING_KEY is set); raises DmnError saying what is wrong."""
    try:
        manifest = json.loads((path / "manifest.json").read_bytes())
    except (OSError, ValueError) as exc:
        raise DmnError(f"bundle {path}: unreadable manifest ({exc})") from None
    key = os.environ.get("DMN_SIGNING_KEY")
    if key:
        signature = manifest.get("signature")
        if not signature:
            raise DmnError(f"bundle {path}: unsigned, and DMN_SIGNING_KEY is set")
        if not hmac.compare_digest(signature, _sign(manifest, key)):
            raise DmnError(f"bundle {path}: bad signature")
    for name, digest in manifest.get("files", {}).items():
        try:
            actual = hashlib.sha256((path / name).read_bytes()).hexdigest()
        except OSError as exc:
            raise DmnError(f"bundle {path}: cannot read {name} ({exc.strerror})") from None
        if actual != digest:
            raise DmnError(f"bundle {path}: {name} does not match its checksum")
    return manifest


def worlds(home: Home) -> list[str]:
    """The worlds that have a bundle folder, by folder name."""
    return [unquote(base.name) for base in sorted(home.bundles.iterdir())] if home.bundles.is_dir() else []


def manifests(home: Home) -> list[dict[str, Any]]:
    """Every kept bundle's manifest, with `current` set on the published one (unreadable ones skipped)."""
    out = []
    for world in worlds(home):
        base, published = folder(home, world), current(home, world)
        for version in versions(home, world):
            try:
                manifest = json.loads((base / version / "manifest.json").read_bytes())
            except (OSError, ValueError):
                continue
            out.append({**manifest, "current": version == published, "path": str(base / version)})
    return out


def _sign(manifest: dict[str, Any], key: str) -> str:
    body = json.dumps({k: v for k, v in manifest.items() if k != "signature"}, sort_keys=True).encode()
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
