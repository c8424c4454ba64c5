"""Which files to read, and which of their bytes are new: from the catalog's ledger of earlier batches.

A file is read whole the first time; a JSONL file that grew (its consumed prefix unchanged) from where
the last batch stopped; a file unchanged since, or a byte-for-byte copy of one already consumed, not at all.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from dmn.config import IngestSettings
from dmn.errors import DmnError
from dmn.home import Home

TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".swp", ".crdownload")


def file_kind(path: Path) -> str | None:
    """jsonl, jsonl.gz, lar (a Lár `run_*.json` audit file) or parquet; None for a file ingest does not read."""
    name = path.name.lower()
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith((".jsonl.gz", ".ndjson.gz")):
        return "jsonl.gz"
    if name.startswith("run_") and name.endswith(".json"):
        return "lar"
    if name.endswith(".parquet"):
        return "parquet"
    return None


def discover(paths: list[Path], home: Home) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files to read under `paths`, and (file, reason) for those skipped.

    Symbolic links inside folders are not followed (a link could point anywhere, and a
    file could arrive twice); hidden and temporary files are still being written.
    """
    files: dict[Path, None] = {}  # an ordered set: an inbox holds every file agents ever wrote
    skipped: list[tuple[Path, str]] = []
    store = (os.path.join(str(home.lake), ""), os.path.join(str(home.tmp), ""))  # as text: looked at per file
    for given in dict.fromkeys(p.absolute() for p in paths):  # a path given twice is read once
        if not given.exists() and not given.is_symlink():
            raise DmnError(f"no such file or folder: {given}")
        if given.is_dir():
            for root, dirs, names in os.walk(given):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                folder = Path(root)
                for name in sorted(names):
                    _consider(folder / name, store, files, skipped)
        else:
            _consider(given.resolve(), store, files, skipped)
    return list(files), skipped


def _consider(path: Path, store: tuple[str, str], files: dict[Path, None], skipped: list[tuple[Path, str]]) -> None:
    text = str(path)  # absolute: `discover` walks absolute paths
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        skipped.append((path, "file name is not valid UTF-8 (rename it)"))
        return
    try:
        st: os.stat_result | None = os.lstat(path)  # one call for what it is and how big: every file, every run
    except OSError:
        st = None
    if st is not None and stat.S_ISLNK(st.st_mode):
        skipped.append((path, "symbolic link (not followed; copy the file instead)"))
    elif path.name.startswith(".") or path.name.endswith(TEMP_SUFFIXES):
        skipped.append((path, "temporary file (still being written)"))
    elif text.startswith(store):
        skipped.append((path, "inside the store itself"))
    elif st is None or not stat.S_ISREG(st.st_mode):
        skipped.append((path, "not a regular file"))
    elif file_kind(path) is None:
        skipped.append((path, "unsupported file type"))
    elif st.st_size == 0:
        skipped.append((path, "empty file"))
    elif not os.access(path, os.R_OK):
        skipped.append((path, "unreadable file (permission denied)"))
    else:
        files[path] = None


@dataclass
class Entry:
    """One file's row in a batch's ledger: what of it the batch consumed. The readers move it forward."""

    path: str
    """The file, relative to the home when inside it (so that a home can move)."""
    kind: str
    size: int
    mtime_ns: int
    bytes_consumed: int
    """Where reading starts (a grown file's earlier end), then where it stopped."""
    lines_consumed: int
    sha256: str = ""
    """Of the consumed bytes, once read."""
    records: int = 0
    quarantined: int = 0


@dataclass
class Read:
    """The plan for one file: read it from `entry.bytes_consumed` on."""

    path: Path
    entry: Entry
    start: int
    """Where reading starts: what earlier batches consumed of it."""
    hasher: Any
    """SHA-256 of the bytes before `start`, to go on with."""
    settled: bool
    """No write for `settle_seconds`: an unterminated last line is not waited for any longer."""


UNCHANGED = "already ingested (unchanged)"
"""`Ledger.plan`'s reason for a file every byte of which a batch has consumed: the files retention may retire."""


class Ledger:
    """What earlier batches consumed, by file and by content (size and SHA-256 of what was consumed)."""

    def __init__(self, home: Home, manifests: list[dict[str, Any]]):
        self.home, self.root = home, os.path.join(str(home.root), "")
        self.inbox = os.path.join(os.path.relpath(home.inbox, home.root), "")  # as `key` writes the paths in it
        self.files = {row["path"]: row for m in manifests for row in m["ledger"]}
        self.committed = {row["path"]: row.get("committed_at", m["committed_at"]) for m in manifests for row in m["ledger"]}
        """When the batch that last consumed each file was committed (ISO time)."""
        self.contents = {(row["bytes_consumed"], row["sha256"]) for m in manifests for row in m["ledger"]}

    def plan(self, path: Path, settle_seconds: float) -> Read | str:
        """How to read `path`, or why not to (the skip reason)."""
        key = self.key(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            return "gone before it was read"
        prev = self.files.get(key)
        if prev and prev["size"] == st.st_size and prev["mtime_ns"] == st.st_mtime_ns and prev["bytes_consumed"] == st.st_size:
            return UNCHANGED
        kind = file_kind(path)
        offset, line, hasher = 0, 0, hashlib.sha256()
        if kind == "jsonl" and prev and st.st_size >= prev["bytes_consumed"]:
            with open(path, "rb") as f:
                hash_prefix(f, prev["bytes_consumed"], hasher)
            if hasher.hexdigest() == prev["sha256"]:  # it grew: go on from where the last batch stopped
                offset, line = prev["bytes_consumed"], prev["lines_consumed"]
                if offset == st.st_size:
                    return UNCHANGED
            else:  # rewritten: read it as new
                hasher = hashlib.sha256()
        if offset == 0 and any(size == st.st_size for size, _ in self.contents):
            with open(path, "rb") as f:
                digest = hash_prefix(f, st.st_size, hashlib.sha256()).hexdigest()
            if (st.st_size, digest) in self.contents:
                return "copy of an ingested file"
        entry = Entry(key, kind, st.st_size, st.st_mtime_ns, offset, line)
        return Read(path, entry, offset, hasher, settled=time.time() - st.st_mtime > settle_seconds)

    def todo(self, path: Path, settle_seconds: float, skips: Counter, unchanged: list[Path]) -> Read | None:
        """`plan(path)`, or None for a file not to read: its reason counted in `skips`, and the file put in
        `unchanged` when a batch consumed all of it (what retention may retire)."""
        todo = self.plan(path, settle_seconds)
        if isinstance(todo, Read):
            return todo
        skips[todo] += 1
        if todo == UNCHANGED:
            unchanged.append(path)
        return None

    def unread(self, path: Path) -> int:
        """About how many bytes of `path` no batch has consumed yet: what reading it will take."""
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return 0
        return max(size - self.files.get(self.key(path), {}).get("bytes_consumed", 0), 0)

    def retirable(self, path: Path, before: str) -> int | None:
        """The size of `path` (a file `plan` found `UNCHANGED`) if it is in the inbox and a batch committed before
        `before` (ISO time) consumed all of it as it is now; else None."""
        key = self.key(path)
        row = self.files.get(key)
        if (row is None or not key.startswith(self.inbox) or self.committed[key] >= before
                or row["bytes_consumed"] != row["size"]):
            return None
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return st.st_size if (st.st_size, st.st_mtime_ns) == (row["size"], row["mtime_ns"]) else None

    def consumed(self, entry: Entry) -> None:
        """Remember what this batch consumed, so that a copy of it later in the same run is skipped."""
        self.contents.add((entry.bytes_consumed, entry.sha256))

    def key(self, path: Path) -> str:
        path = str(path.absolute())
        return path[len(self.root):] if path.startswith(self.root) else path


def hash_prefix(f: BinaryIO, n: int, hasher: Any) -> Any:
    """`hasher` updated with the first `n` bytes of `f` (read from where it stands)."""
    remaining = n
    while remaining > 0:
        block = f.read(min(remaining, 1 << 24))
        if not block:
            break
        hasher.update(block)
        remaining -= len(block)
    return hasher


def retire(home: Home, settings: IngestSettings, ledger: Ledger, unchanged: list[Path], now: datetime) -> dict[str, int]:
    """Delete or archive the inbox files among `unchanged` (found `UNCHANGED`) that a batch committed over
    `retention_days` ago consumed whole (`[ingest] inbox_retention`); returns how many files and bytes left."""
    how = settings.inbox_retention
    if how == "keep":
        return {}
    before = (now - timedelta(days=settings.retention_days)).isoformat()
    files = size = 0
    for path in unchanged:
        if (whole := ledger.retirable(path, before)) is None:
            continue
        if how == "archive":
            target = home.root / "archive" / path.relative_to(home.inbox)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        else:
            path.unlink(missing_ok=True)
        files, size = files + 1, size + whole
    return {"files": files, "bytes": size} if files else {}
