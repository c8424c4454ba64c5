"""The home: one directory that holds everything dmn knows.

    <home>/
      dmn.toml        optional settings (see dmn.config)
      inbox/          agents drop logs here
      lake/           the Parquet episode store, one folder per table, partitioned by world and date
      catalog/        one JSON manifest per committed ingest batch: the store's source of truth
      tmp/            staging and DuckDB spill space (a crashed batch waits here for the next ingest to finish or undo it)
      locks/          advisory locks so that two writers never overlap
      worlds/         the reference world's trained world models (`dmn world`), one folder per env and settings
      bundles/        published System 1 bundles, one folder per world (see dmn.bundle.publish)
      runs/           one JSON record per consolidation run
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from dmn import faults
from dmn.config import Settings
from dmn.errors import Busy, DmnError

DEFAULT_HOME = "dmn-home"


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, path: str | os.PathLike | None = None, *, create: bool = True) -> "Home":
        """`path`, else `$DMN_HOME`, else `./dmn-home`; created on first use.

        >>> home = Home.resolve("/tmp/my-home")  # doctest: +SKIP
        """
        chosen = path if path is not None else os.environ.get("DMN_HOME") or DEFAULT_HOME
        home = cls(Path(chosen).expanduser().absolute())
        if create:
            home.create()
        elif not home.root.is_dir():
            raise DmnError(f"no dmn home at {home.root} (run `dmn ingest` to create one, or pass --home)")
        return home

    def create(self) -> None:
        """Make the home's folders. A home that exists but cannot be written (a read-only disk or mount)
        is left as it is: readers still read it, and writers say so when they try to write."""
        try:
            for sub in (self.inbox, self.lake, self.catalog, self.tmp, self.locks):
                sub.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if not self.root.is_dir():
                raise DmnError(f"cannot create the dmn home at {self.root}: {exc.strerror}") from None

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def catalog(self) -> Path:
        return self.root / "catalog"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def worlds(self) -> Path:
        return self.root / "worlds"

    @property
    def bundles(self) -> Path:
        return self.root / "bundles"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def settings(self) -> Settings:
        return Settings.load(self.root / "dmn.toml")

    @contextlib.contextmanager
    def lock(self, name: str, *, wait: float = 0.0) -> Iterator[None]:
        """Hold the home's `name` lock; raise `Busy` if another process holds it after `wait` seconds.

        The lock is an flock on a file, so it is released when the holder dies, even by SIGKILL.
        """
        path = self.locks / f"{name}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DmnError(f"cannot take the {name} lock ({path}): {exc.strerror}; is the home writable?") from None
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                        raise Busy(
                            f"another dmn process (pid {holder}) is running {name} on {self.root}; "
                            "wait for it to finish"
                        ) from None
                    time.sleep(0.1)
            try:  # the holder's pid, for the message above
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
            except OSError as exc:
                raise DmnError(f"cannot take the {name} lock ({path}): {exc.strerror}") from None
            yield
        finally:
            os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the whole new one, never a part.

    The bytes go to a hidden temporary name beside `path`, are fsynced, then renamed over it.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        faults.point("atomic.written")
        os.replace(tmp, path)
        fsync(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise DmnError(f"cannot write {path}: {exc.strerror}") from None


def fsync(path: Path) -> None:
    """Force a file or a folder (the entries in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
