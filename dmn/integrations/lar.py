"""Lár integration: log JEPA latents through a Lár agent without losing them (`pip install dmn[lar]`).

    >>> from dmn.integrations.lar import TensorAuditLogger, latent          # doctest: +SKIP
    >>> executor = GraphExecutor(logger=TensorAuditLogger(home.inbox))      # doctest: +SKIP
    >>> state.set("latent", latent(z))   # inside a node: z is a numpy array or torch tensor

Lár's own AuditLogger cannot write arrays (json.dump fails) and Lár-JEPA's TensorSafeEncoder
keeps only their shape; `TensorAuditLogger` writes their values as base64 tensor objects, signs
what it wrote (when given Lár's HMAC secret) and writes atomically into the inbox. `latent()`
wraps a vector so that Lár's state diff, which compares values with `!=`, gets a yes or no.
What `dmn ingest` makes of the files is `dmn.lake.lar`.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from dmn.home import write_atomic
from dmn.lake.lar import lar_signature
from dmn.tensors import as_vector

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
