"""Lár integration: log JEPA latents through a Lár agent, and put System 1 in front of its imagination
(`pip install dmn[lar]`).

    >>> from dmn.integrations.lar import System1, TensorAuditLogger, Veto, latent   # doctest: +SKIP
    >>> executor = GraphExecutor(logger=TensorAuditLogger(home.inbox, world="arm", encoder="jepa@3"))  # doctest: +SKIP
    >>> state.set("latent", latent(z))   # inside a node: z is a numpy array or torch tensor

Lár's own AuditLogger cannot write arrays (json.dump fails) and Lár-JEPA's TensorSafeEncoder
keeps only their shape; `TensorAuditLogger` writes their values as base64 tensor objects, signs
what it wrote (when given Lár's HMAC secret) and writes atomically into the inbox. `latent()`
wraps a vector so that Lár's state diff, which compares values with `!=`, gets a yes or no.
What `dmn ingest` makes of the files is `dmn.lake.lar`.

The Trio of Lár-JEPA — a world simulator that imagines, Lár's spine whose System 2 router vetoes
dangerous imagined states, and dmn turning the day's deliberation into reflexes overnight — is two
`RouterNode` decision functions here: `System1` (answer from the bundle, or route to imagination)
and `Veto` (a dangerous plan goes back to replanning, not to the actuators). They write the keys
`[lar]` names, so ingest reads who decided, how sure, at what cost, and what an audit withheld.
`examples/lar_trio.py` builds the whole graph around the reference world model.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import numbers
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from dmn.config import LarSettings
from dmn.home import write_atomic
from dmn.lake.lar import lar_signature
from dmn.tensors import as_vector
from dmn.wake.client import Reflexes

# -- writing through Lár (needs lar-engine) ------------------------------------------------------------


def import_lar() -> Any:
    """The `lar` package, imported quietly (it prints a banner) and without a network lookup; ImportError says
    how to install it."""
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
        cls = _tensor_audit_logger(import_lar().AuditLogger)
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _tensor_audit_logger(base: type) -> type:
    class TensorAuditLogger(base):  # type: ignore[misc, valid-type]
        """A drop-in `lar.AuditLogger` that keeps tensor values; point `log_dir` at the dmn inbox. `world` and
        `encoder`, when given, go into each run's summary, and ingest files the run under them (else under
        `[lar]`'s).

        Example::

            executor = GraphExecutor(logger=TensorAuditLogger(str(Home.resolve().inbox), hmac_secret=secret))
        """

        def __init__(self, log_dir: str | os.PathLike = "lar_logs", hmac_secret: str | None = None, *,
                     world: str | None = None, encoder: str | None = None, **kwargs: Any):
            super().__init__(str(log_dir), hmac_secret=hmac_secret, **kwargs)
            self.names = {k: v for k, v in (("world", world), ("encoder", encoder)) if v}

        def save_to_file(self, run_id: str, user_id: str | None = None, summary: dict[str, Any] | None = None) -> None:
            log_data = json.loads(json.dumps({
                "run_id": run_id, "user_id": user_id, "timestamp": datetime.now(timezone.utc).isoformat(),
                "steps": self.history, "summary": {**(summary or {}), **self.names},
            }, default=_tensor_default))
            if self.hmac_secret:
                log_data["signature"] = lar_signature(log_data, self.hmac_secret)
            write_atomic(Path(self.log_dir) / f"run_{run_id}.json", json.dumps(log_data).encode())

        def _get_utc_timestamp(self) -> str:  # GraphExecutor's circuit breaker calls it; lar's logger lacks it
            return datetime.now(timezone.utc).isoformat()

    TensorAuditLogger.__module__ = __name__
    return TensorAuditLogger


# -- the Trio: System 1 and System 2's veto as Lár routers (no Lár import needed) ---------------------------


class System1:
    """System 1 in front of a Lár graph's imagination, as a `RouterNode` decision function.

    It asks the System 1 client about the state's latent (`[lar] latent_key`). When System 1 answers, it
    sets the action taken, who decided it, how sure and what it cost, and routes "reflex" (to the
    actuators); else "imagine" (to the world model), noting on an audit the action System 1 withheld, which
    the next night measures live precision from. Opening the client is the caller's: `Reflexes.open`.
    `keys` are `[lar]`'s defaults unless given (`home.settings().lar`, where dmn.toml renames them).

        >>> router = lar.RouterNode(System1(reflexes), {"reflex": act, "imagine": imagine})  # doctest: +SKIP
    """

    def __init__(self, reflexes: Reflexes, keys: LarSettings | None = None):
        self.reflexes, self.keys = reflexes, keys or LarSettings()

    def __call__(self, state: Any) -> str:
        k = self.keys
        began = time.perf_counter()
        asked = self.reflexes.ask(state.get(k.latent_key))
        ms = (time.perf_counter() - began) * 1000
        state.set(k.withheld_key, None if asked.withheld is None else _state_value(asked.withheld.action))
        if asked.reflex is None:
            state.set(k.source_key, "system2")
            state.set(k.confidence_key, None)
            state.set(k.latency_key, None)  # System 2's is the veto's to say, when it lets a plan through
            state.set(DELIBERATING_SINCE, time.time())
            return "imagine"
        state.set(k.source_key, "system1")
        state.set(k.confidence_key, float(asked.reflex.confidence))
        state.set(k.latency_key, ms)
        state.set(k.action_key, _state_value(asked.reflex.action))
        return "reflex"


DELIBERATING_SINCE = "deliberating_since"
"""State key `System1` sets when it routes to imagination: `Veto` reads it for System 2's latency."""


class Veto:
    """System 2's veto in latent space, as a `RouterNode` decision function: a dangerous plan goes back
    to replanning, not to the actuators.

    It reads the plan (`plan_key`), the latent the world model imagined it leads to (`plan_latent_key`)
    and the world model's estimate that it ends in failure (`danger_key`). A plan is dangerous when its
    imagined latent is not finite or its danger is `threshold` or more (`dangerous`, the one rule: mark the
    simulations' vetoed flags with it too). A dangerous plan joins `refused_key` (what the replanning node
    must not propose again: `refused(state)`) and it routes "replan"; after `replans` refusals it takes the
    least dangerous plan it saw. A plan it lets through becomes the action taken, with System 2's latency
    since `System1` routed to imagination, and it routes "act". `keys` as for `System1`.

        >>> veto = Veto(threshold=0.5)  # doctest: +SKIP
        >>> router = lar.RouterNode(veto, {"act": act, "replan": choose})  # doctest: +SKIP
    """

    def __init__(self, threshold: float = 0.5, *, replans: int = 3, plan_key: str = "plan_action",
                 plan_latent_key: str = "plan_latent", danger_key: str = "plan_danger",
                 refused_key: str = "refused_plans", keys: LarSettings | None = None):
        if not 0 <= threshold <= 1 or replans < 0:
            raise ValueError(f"threshold must be a probability and replans at least 0, got {threshold} and {replans}")
        self.threshold, self.replans = threshold, replans
        self.plan_key, self.plan_latent_key, self.danger_key, self.refused_key = (plan_key, plan_latent_key,
                                                                                   danger_key, refused_key)
        self.keys = keys or LarSettings()

    def dangerous(self, imagined: Any, danger: float) -> bool:
        """Whether a plan that leads to the `imagined` latent with this estimated chance of failure is vetoed."""
        vector = np.asarray(imagined, np.float64)
        return not (math.isfinite(danger) and np.isfinite(vector).all()) or danger >= self.threshold

    def refused(self, state: Any) -> list[Any]:
        """The plans refused so far at this step: the replanning node proposes something else."""
        return [plan for plan, _ in state.get(self.refused_key) or []]

    def __call__(self, state: Any) -> str:
        k = self.keys
        plan, danger, imagined = state.get(self.plan_key), state.get(self.danger_key), state.get(self.plan_latent_key)
        if not isinstance(danger, numbers.Real) or isinstance(danger, bool):
            raise ValueError(f"the plan needs the world model's danger estimate, a number, in state key "
                             f"{self.danger_key!r}; got {danger!r}")
        if imagined is None:
            raise ValueError(f"the plan needs the latent it was imagined to lead to, in state key "
                             f"{self.plan_latent_key!r}")
        danger = float(danger)
        refused = list(state.get(self.refused_key) or [])
        if self.dangerous(imagined, danger):
            refused.append([plan, danger if math.isfinite(danger) else math.inf])
            if len(refused) <= self.replans:
                state.set(self.refused_key, refused)
                return "replan"
            plan = min(refused, key=lambda r: r[1])[0]  # out of replans: the least dangerous
        state.set(self.refused_key, [])
        state.set(k.action_key, plan)
        since = state.get(DELIBERATING_SINCE)
        state.set(k.latency_key, (time.time() - since) * 1000 if since is not None else None)
        state.delete(DELIBERATING_SINCE)  # a later cycle that skips System1 must not count from this one
        return "act"


def _state_value(action: Any) -> Any:
    """An action as a Lár state value: a vector as a `latent` (so the state diff can compare it), a label as it is."""
    return latent(action) if isinstance(action, np.ndarray) else action
