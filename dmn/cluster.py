"""The Ray cluster that dmn's second engine runs on (`[engine] kind = "ray"`): found, reached, or refused in one line.

Ray is an extra (`pip install 'dmn[ray]'`); nothing imports it but what runs on it. Every node must have the
same dmn installed and see the home at the same path (a shared filesystem): tasks read the inbox and write
their staged files there, and the driver (the dmn process) commits them. As with any Ray driver, dmn runs on
a node of the cluster, and the address is the head's (`host:6379`).

    >>> with connected(home.settings().engine) as ray:   # doctest: +SKIP
    ...     ray.get(ray.remote(task).remote(...))
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from dmn.config import ENGINES, EngineSettings
from dmn.errors import DmnError
from dmn.progress import Progress
from dmn.version import __version__

REACH_SECONDS = 5.0
"""How long the head's port gets to answer before the cluster is called unreachable."""
RETRIES = 3
"""Times Ray runs a task again after its worker or node died."""


def engine_kind(engine: str | None, settings: EngineSettings) -> str:
    """The engine asked for (`--engine`), else the settings': "local" or "ray"."""
    kind = engine or settings.kind
    if kind not in ENGINES:
        raise DmnError(f"unknown engine {kind!r}: {' or '.join(ENGINES)}")
    return kind


def address(settings: EngineSettings) -> str:
    """The cluster's address: the settings', else `RAY_ADDRESS`."""
    found = settings.address or os.environ.get("RAY_ADDRESS", "")
    if not found:
        raise DmnError('the Ray engine needs the cluster\'s address: set [engine] address = "<head>:6379" in '
                       "dmn.toml, or RAY_ADDRESS")
    return found


@contextmanager
def connected(settings: EngineSettings) -> Iterator[Any]:
    """Connected to the cluster for the length of the block (the `ray` module, to submit tasks with); a
    cluster that cannot be reached raises DmnError before anything is done."""
    where = address(settings)
    try:
        import ray
    except ImportError:
        raise DmnError("the Ray engine needs Ray: pip install 'dmn[ray]'") from None
    _reachable(where)
    if ray.is_initialized():  # a driver that is already connected (a notebook, a test): its connection
        yield ray
        return
    try:
        ray.init(address=where, log_to_driver=False, logging_level="ERROR", configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise DmnError(f"cannot connect to the Ray cluster at {where}: {exc}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def key_shards(ray: Any, settings: EngineSettings) -> int:
    """Tasks over shards of the episode ids: the settings' `key_shards`, else one per CPU of the cluster."""
    return settings.key_shards or max(1, int(ray.cluster_resources().get("CPU", 1)))


def gather(ray: Any, refs: list[Any], say: Progress, what: str, stopped: str) -> list[Any]:
    """The tasks' results, in order, telling `say` as they finish; a task that failed for good raises DmnError
    in one line, starting with what the run did about it (`stopped`: "ingest stopped, nothing was committed")."""
    done: dict[Any, Any] = {}
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            done[ready[0]] = ray.get(ready[0])
            say(what, done=len(done), total=len(refs))
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc
        raise DmnError(f"{stopped}: a task failed while {what}: "
                       f"{cause if isinstance(cause, DmnError) else f'{type(cause).__name__}: {cause}'}") from None
    except ray.exceptions.RayError as exc:  # its worker or node died, more often than it may be retried
        raise DmnError(f"{stopped}: the cluster lost a task while {what} ({type(exc).__name__}); "
                       "the next run starts over") from None
    return [done[r] for r in refs]


def node_check(home_root: str, version: str) -> None:
    """Run first by every task: the node must see the home and run this dmn, or the task fails saying which."""
    if version != __version__:
        raise DmnError(f"node {socket.gethostname()} runs dmn {__version__}, the driver {version}: "
                       "install the same dmn on every node")
    if not (Path(home_root) / "catalog").is_dir():
        raise DmnError(f"node {socket.gethostname()} does not see the home {home_root}: it must be on a filesystem "
                       "every node mounts at the same path")


def _reachable(where: str) -> None:
    """Raise DmnError unless the head's port at `where` answers (Ray itself would retry for minutes)."""
    if where == "auto":
        return  # a cluster started on this machine: Ray finds it
    parts = urlsplit(where if "://" in where else f"//{where}")
    try:
        host, port = parts.hostname, parts.port or 6379
    except ValueError:
        host = None
    if not host:
        raise DmnError(f"{where!r} is not a Ray address (the head's host:port)")
    try:
        socket.create_connection((host, port), timeout=REACH_SECONDS).close()
    except OSError as exc:
        raise DmnError(f"cannot reach the Ray cluster at {where} ({exc.strerror or exc}); nothing was changed") from None
