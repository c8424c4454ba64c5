"""Lár audit files as dmn records: what `dmn ingest` reads from a Lár agent's `run_*.json`.

A run is an episode; a step whose state diff sets the score key is a simulation; a step that sets the
action key is a decision (the run's simulations before it belong to it), decided by whoever the source
key names (System 2 when it names no one), with the confidence, latency and withheld action its keys
hold; a step that sets the reward key is that decision's outcome. Lár stamps runs, not steps, so the
records carry the run's timestamp. Keys come from `[lar]` in dmn.toml,
and so do world and encoder unless the run's summary names them (`TensorAuditLogger(world=, encoder=)`).
Signed runs are checked with Lár's own HMAC. Reading needs no Lár install; writing through Lár is
`dmn.integrations.lar`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

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
    summary = doc.get("summary") if isinstance(doc.get("summary"), dict) else {}
    out: list[tuple[int, dict[str, Any]]] = [(0, {
        "type": "episode", "episode_id": episode_id, "world": summary.get("world") or settings.world,
        "encoder": summary.get("encoder") or settings.encoder,
        "agent": doc.get("user_id") or None, "meta": {"source": "lar", "summary": doc.get("summary")},
    })]
    # Lár stamps the run, not its steps: its records carry the run's time, so the night orders runs by it.
    stamp = _with_timezone(doc["timestamp"]) if isinstance(doc.get("timestamp"), str) else None
    when = {"ts": stamp} if stamp else {}
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
            record = {"type": "simulation", "episode_id": episode_id, "step": decisions, **when,
                      "state": after.get(settings.latent_key, before.get(settings.latent_key)),
                      "action": after.get(settings.candidate_key), "score": changed[settings.score_key]}
            if after.get(settings.predicted_key) is not None:
                record["predicted"] = after[settings.predicted_key]
            if isinstance(after.get(settings.vetoed_key), bool):
                record["vetoed"] = after[settings.vetoed_key]
            out.append((line, record))
        if settings.action_key in changed:
            record = {"type": "decision", "episode_id": episode_id, "step": decisions, **when,
                      "state": before.get(settings.latent_key, after.get(settings.latent_key)),
                      "action": changed[settings.action_key], "source": after.get(settings.source_key) or "system2"}
            for field, key in (("confidence", settings.confidence_key), ("latency_ms", settings.latency_key)):
                if isinstance(after.get(key), (int, float)) and not isinstance(after[key], bool):
                    record[field] = after[key]  # a key of the same name that holds something else is not ours
            if after.get(settings.withheld_key) is not None:
                record["reflex"] = after[settings.withheld_key]
            out.append((line, record))
            decisions += 1
        if settings.reward_key in changed:
            reward = changed[settings.reward_key]
            rewards.append(reward)
            out.append((line, {"type": "outcome", "episode_id": episode_id, "step": max(decisions - 1, 0), "reward": reward}))
    end: dict[str, Any] = {"type": "episode_end", "episode_id": episode_id}
    if rewards and all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in rewards):
        end["return"] = float(sum(rewards))
    if stamp:
        end["ended_at"] = stamp
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
