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

    def episode(self, episode_id: str | None = None, *, meta: dict[str, Any] | None = None) -> str:
        """Start an episode (it becomes the default for the calls that follow); returns its id."""
        episode_id = episode_id or uuid.uuid4().hex
        record = {"type": "episode", "episode_id": episode_id, "world": self.world, "encoder": self.encoder,
                  "started_at": _now(), **_given({"agent": self.agent or None, "meta": meta})}
        with self._lock:
            self._episode = episode_id
        self._add(record)
        return episode_id

    def simulation(self, step: int, state: Any, action: Action, score: float, *, predicted: Any = None,
                   vetoed: bool | None = None, cost_ms: float | None = None, episode_id: str | None = None) -> None:
        """One System 2 evaluation: in `state` (None: its step's decision's), imagining `action` led to
        `predicted`, scored `score`. For a whole search's candidates at once, `candidates` is faster."""
        record = {"type": "simulation", "episode_id": self._id(episode_id), "step": _step(step),
                  "score": _number(score, "score"), "ts": _now(),
                  **_given({"vetoed": _maybe(bool, vetoed), "cost_ms": _maybe(_number, cost_ms, "cost_ms")})}
        vectors = _given({"state": _maybe(as_vector, state, "state"), "predicted": _maybe(as_vector, predicted, "predicted")})
        self._add(*_with_action(record, vectors, "action", action))

    def candidates(self, step: int, actions: Any, scores: Any, *, predicted: Any = None, vetoed: Any = None,
                   cost_ms: float | None = None, episode_id: str | None = None) -> None:
        """A System 2 search's candidates at `step`, in one call: `actions` (k labels, or a (k, a) array of
        vectors), their `scores` (k), and optionally what each imagined (`predicted`, (k, d)), which it
        vetoed (k booleans) and what each cost (`cost_ms`, one number for all). Each becomes a simulation
        without a state, which takes its step's decision's: log that decision too.

        >>> log.candidates(step, elites, elite_scores)  # doctest: +SKIP
        """
        head = {"type": "simulation", "episode_id": self._id(episode_id), "step": _step(step), "ts": _now(),
                **_given({"cost_ms": _maybe(_number, cost_ms, "cost_ms")})}
        parts, k = _candidate_parts(head, actions, scores, predicted, vetoed)
        self._add_parts(parts, k)

    def decision(self, step: int, state: Any, action: Action, *, source: str = "system2",
                 confidence: float | None = None, latency_ms: float | None = None, reflex: Action | None = None,
                 episode_id: str | None = None) -> None:
        """What the agent did at `step`, and whether deliberation (system2) or a reflex (system1) chose it.

        `reflex`: on a System 2 decision made because System 1's answer was withheld for an audit
        (`Reflexes.ask(z).withheld`), that answer's action, so that the night measures System 1's live precision.
        """
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        record = {"type": "decision", "episode_id": self._id(episode_id), "step": _step(step), "source": source,
                  "ts": _now(), **_given({"confidence": _maybe(_number, confidence, "confidence"),
                                          "latency_ms": _maybe(_number, latency_ms, "latency_ms")})}
        record, vectors = _with_action(record, {"state": as_vector(state, "state")}, "action", action)
        if reflex is not None:
            record, vectors = _with_action(record, vectors, "reflex", reflex)
        self._add(record, vectors)

    def outcome(self, step: int, *, reward: float | None = None, done: bool | None = None,
                success: bool | None = None, episode_id: str | None = None) -> None:
        """What the world answered to the action taken at `step`."""
        self._add({"type": "outcome", "episode_id": self._id(episode_id), "step": _step(step),
                   **_given({"reward": _maybe(_number, reward, "reward"), "done": _maybe(bool, done),
                             "success": _maybe(bool, success)})})

    def end(self, *, return_: float | None = None, success: bool | None = None, episode_id: str | None = None) -> None:
        """Close an episode and flush, so that a finished episode is on disk whole."""
        self._add({"type": "episode_end", "episode_id": self._id(episode_id), "ended_at": _now(),
                   **_given({"return": _maybe(_number, return_, "return"), "success": _maybe(bool, success)})})
        self.flush()

    # -- buffering ---------------------------------------------------------------------------------

    def _add(self, record: dict[str, Any], vectors: dict[str, Any] | None = None) -> None:
        parts = [json.dumps(record, separators=(",", ":")).encode()[:-1]]
        for name, vector in (vectors or {}).items():  # splice the tensor objects in as ready-made JSON
            parts += (b',"', name.encode(), b'":', *tensor_json(vector))
        parts.append(b"}\n")
        self._add_parts(parts, 1)

    def _add_parts(self, parts: list[bytes], records: int) -> None:
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
            path = self._writer.put(b"".join(parts) if parts else None)
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

    def _id(self, episode_id: str | None) -> str:
        episode_id = episode_id or self._episode
        if episode_id is None:
            raise ValueError("no episode: call episode() first or pass episode_id")
        return episode_id


class _Writer:
    """The thread that writes a logger's files into the inbox (`<folder>/<prefix>-000001.jsonl`, ...), off the
    agent's thread: each atomically (`write_atomic`); a file whose write failed is kept, and handed over
    again with the next one."""

    def __init__(self, folder: Path, prefix: str) -> None:
        self.folder, self.prefix, self.files = folder, prefix, 0
        self._queue: queue.Queue[tuple[Path, bytes] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._failure: BaseException | None = None
        self._unwritten: list[tuple[Path, bytes]] = []
        threading.Thread(target=self._loop, name="dmn-logger", daemon=True).start()

    def put(self, data: bytes | None) -> Path | None:
        """Write `data` as the next file (None: only the files that failed before), in order; returns its path."""
        with self._lock:
            retry, self._unwritten = self._unwritten, []
        for item in retry:
            self._queue.put(item)
        if data is None:
            return None
        self.files += 1
        path = self.folder / f"{self.prefix}-{self.files:06d}.jsonl"
        self._queue.put((path, data))
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
            try:
                write_atomic(*item)
            except BaseException as exc:  # noqa: BLE001 - raised on the agent's next flush
                self._failure = self._failure or exc
                with self._lock:
                    self._unwritten.append(item)
            finally:
                self._queue.task_done()
        self._queue.task_done()


_OPEN: "weakref.WeakSet[EpisodeLogger]" = weakref.WeakSet()


@atexit.register
def _close_open_loggers() -> None:
    # A logger the agent forgot to close still gets its last records to disk at interpreter exit.
    for logger in list(_OPEN):
        logger.close()


def _given(fields: dict[str, Any]) -> dict[str, Any]:
    """The optional fields that were given (a field left out is None)."""
    return {k: v for k, v in fields.items() if v is not None}


def _maybe(check: Any, value: Any, *args: Any) -> Any:
    """`check(value, *args)`, or None for a field left out."""
    return None if value is None else check(value, *args)


def _now() -> float:
    return round(time.time(), 6)  # Unix seconds: a tenth of the cost of an ISO string


def _step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, int) and not hasattr(step, "__index__") or int(step) < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    return int(step)


def _action(action: Any, name: str = "action") -> int | str | np.ndarray:
    """A label (an int or a str, or a numpy or torch integer with one element) as it is, or a vector (a
    sequence, numpy array or torch tensor) as float32."""
    if isinstance(action, str):
        return action
    if np.ndim(action) > 0 and not (np.size(action) == 1 and "int" in str(getattr(action, "dtype", ""))):
        return as_vector(action, name)
    if hasattr(action, "item") and not isinstance(action, (int, bool)):  # numpy / torch scalar
        action = action.item()
    if isinstance(action, bool) or not isinstance(action, int):
        raise ValueError(f"{name} must be an int, a str or a vector, got {action!r}")
    return action


def _with_action(record: dict[str, Any], vectors: dict[str, Any], name: str, action: Any
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The record with its action `name`: a label in the record, a vector among its vectors."""
    value = _action(action, name)
    if isinstance(value, np.ndarray):
        return record, {**vectors, name: value}
    return {**record, name: value}, vectors


def _candidate_parts(head: dict[str, Any], actions: Any, scores: Any, predicted: Any, vetoed: Any
                     ) -> tuple[list[bytes], int]:
    """`EpisodeLogger.candidates`' records, checked, as JSON pieces (and how many records): one template
    for what they share, then per candidate its score, action, veto and imagined latent."""
    scores = _finite_array(scores, "scores", 1, dtype=np.float64)
    k = len(scores)
    if hasattr(actions, "detach"):  # torch.Tensor, without importing torch
        actions = actions.detach().cpu().numpy()
    labels = np.asarray(actions).ndim == 1 and np.asarray(actions).dtype.kind in "iuUSO"  # else vectors
    actions = [_action(a) for a in actions] if labels else _finite_array(actions, "actions", 2, rows=k)
    predicted = None if predicted is None else _finite_array(predicted, "predicted", 2, rows=k)
    vetoed = None if vetoed is None else np.asarray(vetoed, bool).reshape(-1)
    if len(actions) != k or (vetoed is not None and len(vetoed) != k) or k == 0:
        raise ValueError(f"candidates need one action, one score (and one vetoed flag) each, got "
                         f"{len(actions)} actions and {k} scores")
    template = json.dumps(head, separators=(",", ":")).encode()[:-1] + b',"score":'
    parts: list[bytes] = []
    for i in range(k):
        parts += (template, repr(float(scores[i])).encode(), b',"action":')
        parts += [json.dumps(actions[i]).encode()] if labels else tensor_json(actions[i])
        if vetoed is not None:
            parts.append(b',"vetoed":true' if vetoed[i] else b',"vetoed":false')
        if predicted is not None:
            parts += (b',"predicted":', *tensor_json(predicted[i]))
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
