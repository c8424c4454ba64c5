"""The writer agents call from their loop: cheap on the hot path, atomic on disk.

    >>> with EpisodeLogger("my-home", world="CartPole-v1", encoder="jepa@3") as log:  # doctest: +SKIP
    ...     log.episode()
    ...     log.simulation(step=0, state=z, action=1, score=0.93, predicted=z_next, cost_ms=41.0)
    ...     log.decision(step=0, state=z, action=1, source="system2", latency_ms=88.0)
    ...     log.outcome(step=0, reward=1.0)
    ...     log.end(return_=1.0, success=True)

Records are encoded as they come (vectors as base64 tensor objects) and buffered; a flush hands
them to a writer thread, which writes a hidden temporary file in the inbox, fsyncs it and renames
it to `*.jsonl`: the agent never waits for the disk, and ingest only ever sees whole files.
"""

from __future__ import annotations

import atexit
import functools
import json
import math
import os
import queue
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from dmn.home import Home, write_atomic
from dmn.records import SOURCES
from dmn.tensors import as_numbers, as_vector, tensor_json

Action = Any
"""An action: a label (an int or a str) in a discrete world, a vector (sequence, numpy array, torch tensor)
in a continuous one."""


class EpisodeLogger:
    """Log one agent's episodes into `<home>/inbox` in dmn's native JSONL format.

    Thread-safe: several threads may log into one logger (pass `episode_id` explicitly when
    they run different episodes). Call `close()` or use it as a context manager, or the last
    buffered records are lost.
    """

    def __init__(self, home: str | os.PathLike | Home | None = None, *, world: str, encoder: str,
                 agent: str | None = None, flush_records: int = 1000, flush_seconds: float = 5.0):
        if not isinstance(world, str) or not world or not isinstance(encoder, str) or not encoder:
            raise ValueError("world and encoder must be non-empty strings")
        self.home = home if isinstance(home, Home) else Home.resolve(home)
        self.world, self.encoder, self.agent = world, encoder, agent
        self.flush_records, self.flush_seconds = flush_records, flush_seconds
        self._lock = threading.Lock()
        self._parts: list[bytes] = []  # the buffered records' JSON, in pieces joined at flush
        self._records = 0
        self._last_flush = time.monotonic()
        self._episode: str | None = None
        self._closed = False
        self._writer = _Writer(self.home.inbox, f"{_slug(agent or world)}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        _OPEN.add(self)

    # -- records -----------------------------------------------------------------------------------
    # Each record is written as JSON pieces from byte templates (json.dumps costs more than the rest of a
    # record together); the pieces are joined on the writer's thread.

    def episode(self, episode_id: str | None = None, *, meta: dict[str, Any] | None = None) -> str:
        """Start an episode (it becomes the default for the calls that follow); returns its id."""
        episode_id = episode_id or uuid.uuid4().hex
        record = {"type": "episode", "episode_id": episode_id, "world": self.world, "encoder": self.encoder,
                  "started_at": round(time.time(), 6), "agent": self.agent or None, "meta": meta}
        line = json.dumps({k: v for k, v in record.items() if v is not None}, separators=(",", ":")).encode()
        with self._lock:
            self._episode = episode_id
        self._add([line, b"\n"])
        return episode_id

    def simulation(self, step: int, state: Any, action: Action, score: float, *, predicted: Any = None,
                   vetoed: bool | None = None, cost_ms: float | None = None, episode_id: str | None = None) -> None:
        """One System 2 evaluation: in `state` (None: its step's decision's), imagining `action` led to
        `predicted`, scored `score`. For a whole search's candidates at once, `candidates` is faster."""
        parts = [b'{"type":"simulation","episode_id":%s,"step":%d,"score":%r,"ts":%.6f'
                 % (self._id(episode_id), _step(step), _number(score, "score"), time.time()),
                 *_flags(vetoed=vetoed), *_numbers(cost_ms=cost_ms), *_action_field("action", action)]
        for name, vector in (("state", state), ("predicted", predicted)):
            if vector is not None:
                parts += _vector_field(name, as_vector(vector, name))
        parts.append(b"}\n")
        self._add(parts)

    def candidates(self, step: int, actions: Any, scores: Any, *, predicted: Any = None, vetoed: Any = None,
                   cost_ms: float | None = None, episode_id: str | None = None) -> None:
        """A System 2 search's candidates at `step`, in one call: `actions` (k labels, or a (k, a) array of
        vectors), their `scores` (k), and optionally what each imagined (`predicted`, (k, d)), which it
        vetoed (k booleans) and what each cost (`cost_ms`, one number for all). Each becomes a simulation
        without a state, which takes its step's decision's: log that decision too.

        >>> log.candidates(step, elites, elite_scores)  # doctest: +SKIP
        """
        head = b''.join((b'{"type":"simulation","episode_id":%s,"step":%d,"ts":%.6f'
                         % (self._id(episode_id), _step(step), time.time()), *_numbers(cost_ms=cost_ms)))
        parts, k = _candidate_parts(head, actions, scores, predicted, vetoed)
        self._add(parts, k)

    def decision(self, step: int, state: Any, action: Action, *, source: str = "system2",
                 confidence: float | None = None, latency_ms: float | None = None, reflex: Action | None = None,
                 episode_id: str | None = None) -> None:
        """What the agent did at `step`, and whether deliberation (system2) or a reflex (system1) chose it.

        `reflex`: on a System 2 decision made because System 1's answer was withheld for an audit
        (`Reflexes.ask(z).withheld`), that answer's action, so that the night measures System 1's live precision.
        """
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        parts = [b'{"type":"decision","episode_id":%s,"step":%d,"source":"%s","ts":%.6f'
                 % (self._id(episode_id), _step(step), source.encode(), time.time()),
                 *_numbers(confidence=confidence, latency_ms=latency_ms), *_action_field("action", action),
                 *(() if reflex is None else _action_field("reflex", reflex)),
                 *_vector_field("state", as_vector(state, "state")), b"}\n"]
        self._add(parts)

    def outcome(self, step: int, *, reward: float | None = None, done: bool | None = None,
                success: bool | None = None, episode_id: str | None = None) -> None:
        """What the world answered to the action taken at `step`."""
        self._add([b'{"type":"outcome","episode_id":%s,"step":%d' % (self._id(episode_id), _step(step)),
                   *_numbers(reward=reward), *_flags(done=done, success=success), b"}\n"])

    def end(self, *, return_: float | None = None, success: bool | None = None, episode_id: str | None = None) -> None:
        """Close an episode and flush, so that a finished episode is on disk whole."""
        self._add([b'{"type":"episode_end","episode_id":%s,"ended_at":%.6f' % (self._id(episode_id), time.time()),
                   *_numbers(**{"return": return_}), *_flags(success=success), b"}\n"])
        self.flush()

    # -- buffering ---------------------------------------------------------------------------------

    def _add(self, parts: list[bytes], records: int = 1) -> None:
        with self._lock:
            if self._closed:
                raise ValueError("this EpisodeLogger is closed")
            self._parts += parts
            self._records += records
            due = self._records >= self.flush_records or time.monotonic() - self._last_flush >= self.flush_seconds
        if due:
            self.flush()

    def flush(self, wait: bool = False) -> Path | None:
        """Hand the buffered records to the writer as a new inbox file; returns its path (None if nothing
        was buffered). With `wait`, return once every file handed over so far is on disk.

        Raises DmnError if an earlier write failed (a full or read-only disk, say); the records of a
        failed write are kept and written again at the next flush.
        """
        with self._lock:
            parts, self._parts, self._records = self._parts, [], 0
            self._last_flush = time.monotonic()
            path = self._writer.put(parts)
        if wait:
            self._writer.wait()
        self._writer.raise_failure()
        return path

    def close(self) -> None:
        """Flush, wait until everything is on disk, and stop the writer."""
        if self._closed:
            return
        with self._lock:
            self._closed = True
        _OPEN.discard(self)
        try:
            self.flush(wait=True)
        finally:
            self._writer.stop()

    def __enter__(self) -> "EpisodeLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _id(self, episode_id: str | None) -> bytes:
        """The episode's id as JSON text."""
        episode_id = episode_id or self._episode
        if episode_id is None:
            raise ValueError("no episode: call episode() first or pass episode_id")
        if not isinstance(episode_id, str):
            raise ValueError(f"episode_id must be a string, got {episode_id!r}")
        return _quoted(episode_id)


class _Writer:
    """The thread that writes a logger's files into the inbox (`<folder>/<prefix>-000001.jsonl`, ...), off the
    agent's thread: each atomically (`write_atomic`); a file whose write failed is kept, and handed over
    again with the next one."""

    def __init__(self, folder: Path, prefix: str) -> None:
        self.folder, self.prefix, self.files = folder, prefix, 0
        self._queue: queue.Queue[tuple[Path, list[bytes]] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._failure: BaseException | None = None
        self._unwritten: list[tuple[Path, list[bytes]]] = []
        threading.Thread(target=self._loop, name="dmn-logger", daemon=True).start()

    def put(self, parts: list[bytes]) -> Path | None:
        """Write the joined `parts` as the next file (none: only the files that failed before), in order;
        returns its path."""
        with self._lock:
            retry, self._unwritten = self._unwritten, []
        for item in retry:
            self._queue.put(item)
        if not parts:
            return None
        self.files += 1
        path = self.folder / f"{self.prefix}-{self.files:06d}.jsonl"
        self._queue.put((path, parts))
        return path

    def wait(self) -> None:
        """Return once every file handed over so far is written (or has failed)."""
        self._queue.join()

    def raise_failure(self) -> None:
        """Raise the first failure since the last call, if there was one."""
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def stop(self) -> None:
        self._queue.put(None)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            path, parts = item
            data = b"".join(parts)  # here, not on the agent's thread
            try:
                write_atomic(path, data)
            except BaseException as exc:  # noqa: BLE001 - raised on the agent's next flush
                self._failure = self._failure or exc
                with self._lock:
                    self._unwritten.append((path, [data]))
            finally:
                self._queue.task_done()
        self._queue.task_done()


_OPEN: "weakref.WeakSet[EpisodeLogger]" = weakref.WeakSet()


@atexit.register
def _close_open_loggers() -> None:
    # A logger the agent forgot to close still gets its last records to disk at interpreter exit.
    for logger in list(_OPEN):
        logger.close()


def _numbers(**fields: Any) -> list[bytes]:
    """The given number fields (a field left out is None) as JSON pieces: `,"name":1.5`."""
    return [b',"%s":%r' % (name.encode(), _number(value, name)) for name, value in fields.items() if value is not None]


def _flags(**fields: Any) -> list[bytes]:
    """The given boolean fields as JSON pieces: `,"name":true`."""
    return [b',"%s":%s' % (name.encode(), b"true" if value else b"false") for name, value in fields.items()
            if value is not None]


@functools.lru_cache(maxsize=1024)
def _quoted(text: str) -> bytes:
    """A string as JSON text; episode ids and labels repeat, so each is encoded once."""
    return json.dumps(text).encode()


def _step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, int) and not hasattr(step, "__index__") or int(step) < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    return int(step)


def _action(action: Any, name: str = "action") -> int | str | np.ndarray:
    """A label (an int or a str, or a numpy or torch integer with one element) as it is, or a vector (a
    sequence, numpy array or torch tensor) as float32."""
    if type(action) is int or isinstance(action, str):
        return action
    if np.ndim(action) > 0 and not (np.size(action) == 1 and "int" in str(getattr(action, "dtype", ""))):
        return as_vector(action, name)
    if hasattr(action, "item") and not isinstance(action, (int, bool)):  # numpy / torch scalar
        action = action.item()
    if isinstance(action, bool) or not isinstance(action, int):
        raise ValueError(f"{name} must be an int, a str or a vector, got {action!r}")
    return action


def _vector_field(name: str, vector: np.ndarray) -> tuple[bytes, ...]:
    """The vector field `name` (a checked float32 vector) as JSON pieces: `,"name":` and its tensor object."""
    return (b',"%s":' % name.encode(), *tensor_json(vector))


def _action_field(name: str, action: Any) -> tuple[bytes, ...]:
    """The action field `name` as JSON pieces: a label as it is, a vector as a tensor object."""
    value = _action(action, name)
    if isinstance(value, np.ndarray):
        return _vector_field(name, value)
    return (b',"%s":%s' % (name.encode(), _quoted(value) if isinstance(value, str) else b"%d" % value),)


def _candidate_parts(head: bytes, actions: Any, scores: Any, predicted: Any, vetoed: Any) -> tuple[list[bytes], int]:
    """`EpisodeLogger.candidates`' records, checked, as JSON pieces (and how many records): `head` for what
    they share, then per candidate its score, action, veto and imagined latent."""
    scores = _finite_array(scores, "scores", 1, dtype=np.float64)
    k = len(scores)
    if hasattr(actions, "detach"):  # torch.Tensor, without importing torch
        actions = actions.detach().cpu().numpy()
    labels = np.asarray(actions).ndim == 1 and np.asarray(actions).dtype.kind in "iuUSO"  # else vectors
    actions = list(actions) if labels else _finite_array(actions, "actions", 2, rows=k)
    predicted = None if predicted is None else _finite_array(predicted, "predicted", 2, rows=k)
    vetoed = None if vetoed is None else np.asarray(vetoed, bool).reshape(-1)
    if len(actions) != k or (vetoed is not None and len(vetoed) != k) or k == 0:
        raise ValueError(f"candidates need one action, one score (and one vetoed flag) each, got "
                         f"{len(actions)} actions and {k} scores")
    template = head + b',"score":'
    parts: list[bytes] = []
    for i, score in enumerate(scores.tolist()):
        parts += (template, b"%r" % score)
        parts += _action_field("action", actions[i]) if labels else _vector_field("action", actions[i])
        if vetoed is not None:
            parts.append(b',"vetoed":true' if vetoed[i] else b',"vetoed":false')
        if predicted is not None:
            parts += _vector_field("predicted", predicted[i])
        parts.append(b"}\n")
    return parts, k


def _finite_array(values: Any, name: str, ndim: int, rows: int | None = None, dtype: type = np.float32
                  ) -> np.ndarray:
    """`values` as a finite array (`as_numbers`) of `ndim` dimensions (of `rows` rows); else ValueError.
    Vectors are float32, as they are stored; scores keep float64, so that close ones do not tie."""
    array = as_numbers(values, name, dtype)
    if array.ndim == 1 and ndim == 2:
        array = array[:, None]
    if array.ndim != ndim or (rows is not None and len(array) != rows):
        shape = "(k,)" if ndim == 1 else "(k, n)"
        raise ValueError(f"{name} must have {shape} shape{'' if rows is None else f' for k = {rows}'}, got {array.shape}")
    return array


def _number(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:40] or "agent"
