"""Lár integration: ingest Lár's audit files, and log JEPA latents through Lár without losing them.

Reading (`audit_to_records`, used by `dmn ingest` for `run_*.json`) needs no Lár install: a run
is an episode, a step whose state diff sets the score key is a simulation, a step that sets the
action key is a decision (simulations belong to the run's next decision), a step that sets the
reward key is that decision's outcome. Keys, world and encoder come from `[lar]` in dmn.toml.

Writing needs `pip install dmn[lar]`:

    >>> from dmn.integrations.lar import TensorAuditLogger, latent          # doctest: +SKIP
    >>> executor = GraphExecutor(logger=TensorAuditLogger(home.inbox))      # doctest: +SKIP
    >>> state.set("latent", latent(z))   # inside a node: z is a numpy array or torch tensor

Lár's own AuditLogger cannot write arrays (json.dump fails) and Lár-JEPA's TensorSafeEncoder
keeps only their shape; `TensorAuditLogger` writes their values as base64 tensor objects, signs
what it wrote (when given Lár's HMAC secret) and writes atomically into the inbox. `latent()`
wraps a vector so that Lár's state diff, which compares values with `!=`, gets a yes or no.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from dmn.config import LarSettings

LarProblem = tuple[str, str]
"""(reason, hint) for a Lár file that is quarantined whole."""


def audit_to_records(data: bytes, settings: LarSettings, run_name: str = "") -> tuple[list[tuple[int, bytes]], LarProblem | None]:
    """Translate one Lár audit file into native dmn records: ([(Lár step, JSON line)], problem)."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        return [], ("not valid JSON", f"the Lár audit file does not parse: {exc}")
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list):
        return [], ("not a Lár audit file", "expected a JSON object with a \"steps\" list (as lar.AuditLogger writes)")
    if settings.hmac_secret:
        if "signature" not in doc:
            return [], ("unsigned Lár file", "a Lár HMAC secret is configured, so every run file must carry a signature")
        if not hmac.compare_digest(str(doc["signature"]), lar_signature(doc, settings.hmac_secret)):
            return [], ("bad Lár signature", "the file was changed after it was signed, or signed with another secret")
    episode_id = str(doc.get("run_id") or run_name)
    out: list[tuple[int, dict[str, Any]]] = [(0, {
        "type": "episode", "episode_id": episode_id, "world": settings.world, "encoder": settings.encoder,
        "agent": doc.get("user_id") or None, "meta": {"source": "lar", "summary": doc.get("summary")},
    })]
    decisions, rewards = 0, []
    for index, step in enumerate(doc["steps"]):
        if not isinstance(step, dict):
            continue
        before = step.get("state_before") if isinstance(step.get("state_before"), dict) else {}
        diff = step.get("state_diff") if isinstance(step.get("state_diff"), dict) else {}
        changed = {k: v for part in ("added", "updated") if isinstance(diff.get(part), dict) for k, v in diff[part].items()}
        after = step.get("state_after") if isinstance(step.get("state_after"), dict) else {**before, **changed}
        line = step["step"] if isinstance(step.get("step"), int) and not isinstance(step["step"], bool) else index
        if settings.score_key in changed:
            record = {"type": "simulation", "episode_id": episode_id, "step": decisions,
                      "state": after.get(settings.latent_key, before.get(settings.latent_key)),
                      "action": after.get(settings.candidate_key), "score": changed[settings.score_key]}
            if after.get(settings.predicted_key) is not None:
                record["predicted"] = after[settings.predicted_key]
            if isinstance(after.get(settings.vetoed_key), bool):
                record["vetoed"] = after[settings.vetoed_key]
            out.append((line, record))
        if settings.action_key in changed:
            out.append((line, {"type": "decision", "episode_id": episode_id, "step": decisions,
                               "state": before.get(settings.latent_key, after.get(settings.latent_key)),
                               "action": changed[settings.action_key], "source": "system2"}))
            decisions += 1
        if settings.reward_key in changed:
            reward = changed[settings.reward_key]
            rewards.append(reward)
            out.append((line, {"type": "outcome", "episode_id": episode_id, "step": max(decisions - 1, 0), "reward": reward}))
    end: dict[str, Any] = {"type": "episode_end", "episode_id": episode_id}
    if rewards and all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in rewards):
        end["return"] = float(sum(rewards))
    if isinstance(doc.get("timestamp"), str):
        end["ended_at"] = _with_timezone(doc["timestamp"])
    out.append((len(doc["steps"]), end))
    return [(n, json.dumps(r).encode()) for n, r in out], None


def lar_signature(doc: dict[str, Any], secret: str) -> str:
    """Lár's HMAC-SHA256 over the run, as lar.AuditLogger computes it (sorted keys, compact JSON)."""
    payload = json.dumps({k: v for k, v in doc.items() if k != "signature"}, sort_keys=True, separators=(",", ":"))
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def _with_timezone(stamp: str) -> str:
    """Lár writes local time without a zone; read it as this machine's local time."""
    try:
        moment = datetime.fromisoformat(stamp)
        return (moment if moment.tzinfo else moment.astimezone()).isoformat()
    except (ValueError, OverflowError):
        return stamp  # ingest quarantines what it cannot read


# -- writing through Lár (needs lar-engine) ------------------------------------------------------------


def _import_lar() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network lookup at import
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # lar prints a banner on import
            import lar
    except ImportError:
        raise ImportError("the Lár integration needs lar-engine: pip install 'dmn[lar]'") from None
    return lar


class Latent(np.ndarray):
    """A float32 vector that compares equal as a whole, so Lár's state diff can compare it."""

    def __eq__(self, other: object) -> bool:  # type: ignore[override]
        return isinstance(other, np.ndarray) and self.shape == other.shape and bool(np.array_equal(self, other))

    def __ne__(self, other: object) -> bool:  # type: ignore[override]
        return not self.__eq__(other)

    __hash__ = None  # type: ignore[assignment]


def latent(value: Any) -> Latent:
    """Wrap a numpy array or torch tensor for a Lár state value (see `Latent`)."""
    from dmn.tensors import as_vector

    return as_vector(value, "latent").view(Latent)


def _tensor_default(value: Any) -> Any:
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # torch.Tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        dtype = value.dtype.name if value.dtype.name in ("float16", "float32", "float64") else "float64"
        data = np.ascontiguousarray(value, dtype=np.dtype(dtype).newbyteorder("<"))
        return {"__type__": "Tensor", "shape": list(value.shape), "dtype": dtype,
                "b64": base64.b64encode(data.tobytes()).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def __getattr__(name: str) -> Any:
    # TensorAuditLogger subclasses lar.AuditLogger, so it is built on first use: reading Lár files needs no Lár.
    if name == "TensorAuditLogger":
        cls = _tensor_audit_logger(_import_lar().AuditLogger)
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _tensor_audit_logger(base: type) -> type:
    class TensorAuditLogger(base):  # type: ignore[misc, valid-type]
        """A drop-in `lar.AuditLogger` that keeps tensor values; point `log_dir` at the dmn inbox.

        Example::

            executor = GraphExecutor(logger=TensorAuditLogger(str(Home.resolve().inbox), hmac_secret=secret))
        """

        def save_to_file(self, run_id: str, user_id: str | None = None, summary: dict[str, Any] | None = None) -> None:
            from dmn.home import write_atomic

            log_data = json.loads(json.dumps({
                "run_id": run_id, "user_id": user_id, "timestamp": datetime.now(timezone.utc).isoformat(),
                "steps": self.history, "summary": summary or {},
            }, default=_tensor_default))
            if self.hmac_secret:
                log_data["signature"] = lar_signature(log_data, self.hmac_secret)
            write_atomic(Path(self.log_dir) / f"run_{run_id}.json", json.dumps(log_data).encode())

        def _get_utc_timestamp(self) -> str:  # GraphExecutor's circuit breaker calls it; lar's logger lacks it
            return datetime.now(timezone.utc).isoformat()

    TensorAuditLogger.__module__ = __name__
    return TensorAuditLogger
