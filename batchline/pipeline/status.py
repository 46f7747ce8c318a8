"""The job as callers see it: state, counts per terminal state, batches, usage and cost."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchline import liveness
from batchline.pricing import NANO
from batchline.store import Chunk, ChunkState, Store
from batchline.wire import loads

# The job hash's counters of failed requests per error type (`failed:<error_type>`, written
# once per request by the FINISH script), and how many types a status names.
FAILED_FIELD_PREFIX = "failed:"
TOP_FAILURE_REASONS = 5

USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


def status(store: Store, job_id: str, with_batches: bool = True) -> dict[str, Any]:
    """The job as callers see it: state, counts, batches, usage and cost."""
    f = store.job_fields(job_id)

    def num(name: str) -> int:
        return int(f.get(name) or 0)

    counts = {name: num(name) for name in ("total", "succeeded", "failed", "canceled", "rejected")}
    counts["in_flight"] = (
        num("accepted") - counts["succeeded"] - counts["failed"] - counts["canceled"]
    )
    state = f.get("state", "pending")
    if state == "ingesting":
        state = "pending"
    out: dict[str, Any] = {
        "job_id": job_id,
        "state": state,
        "counts": counts,
        "usage": {name: num(name) for name in USAGE_FIELDS},
        "cost_usd": round(num("cost_nusd") / NANO, 6),
        "saved_usd": round(num("saved_nusd") / NANO, 6),
        "estimated_cost_usd": float(f.get("estimated_cost_usd") or 0),
        # Sends of requests again (an attempt each), and distinct requests sent again.
        "retried": num("retried"),
        "retried_requests": num("retried_requests"),
        # The most frequent error types of the failed requests, most first.
        "failure_reasons": top_failure_reasons(
            {
                name[len(FAILED_FIELD_PREFIX) :]: int(value)
                for name, value in f.items()
                if name.startswith(FAILED_FIELD_PREFIX) and value.isdigit()
            }
        ),
        "cache_hits": num("cache_hits"),
        "deduplicated": num("deduplicated"),
        "duplicates_canceled": num("duplicates_canceled"),
        "canceled_after_create": num("canceled_after_create"),
        # In-process handler calls ended (batchline.handlers), and those that gave up.
        "handled": num("handled"),
        "handler_failed": num("handler_failed"),
        "metadata": loads(f["metadata"]) if f.get("metadata") else None,
        "submitted_at": float(f.get("submitted_at") or f.get("created_at") or 0),
        "ended_at": float(f["ended_at"]) if f.get("ended_at") else None,
    }
    if with_batches:
        # What the job waits for while the fleet recovers from a worker's death, if anything.
        out["recovery"] = [w.as_dict() for w in liveness.waits(store.r, store.settings, job_id)]
        chunks = store.chunks(job_id)
        out["batches"] = [_batch(c) for c in chunks]
        out["blocked"] = [
            {"chunk": c.number, "batch_id": c.batch_id, **_blocked(c)}
            for c in chunks
            if c.state == ChunkState.BLOCKED
        ]
    return out


def top_failure_reasons(
    failed: Mapping[str, int], top: int = TOP_FAILURE_REASONS
) -> list[dict[str, Any]]:
    """The `top` error types with the most failed requests, most first (ties by name)."""
    ranked = sorted(((n, t) for t, n in failed.items() if n > 0), key=lambda p: (-p[0], p[1]))
    return [{"error_type": t, "count": n} for n, t in ranked[:top]]


def _batch(c: Chunk) -> dict[str, Any]:
    out: dict[str, Any] = {
        "chunk": c.number,
        "batch_id": c.batch_id,
        "attempt": c.attempt,
        "status": c.state,
        "requests": c.count,
        "processed": c.number_field("processed"),
        "counts": {
            k: c.number_field(f"b_{k}") for k in ("succeeded", "errored", "canceled", "expired")
        },
        "error": c.fields.get("error") or None,
    }
    if c.state == ChunkState.CREATING and c.fields.get("call") == "unknown":
        # A create whose answer was lost: what it waits for before deciding.
        out["waiting"] = c.fields.get("waiting") or "settle"
        if c.fields.get("suspects"):
            out["suspects"] = c.number_field("suspects")
    if c.state == ChunkState.BLOCKED:
        out["blocked"] = _blocked(c)
        out["error"] = c.fields.get("blocked_error") or out["error"]
    return out


def _blocked(c: Chunk) -> dict[str, Any]:
    """Why a chunk is blocked, since when, and what an operator can do."""
    reason = c.fields.get("blocked_reason") or ""
    command = f"batchline unblock {c.job_id} --chunk {c.number}"
    resend = f"{command} --resend" if reason in ("not_found", "overdue") else None
    return {
        "reason": reason,
        "error": c.fields.get("blocked_error") or None,
        "since": c.time_field("blocked_at") or None,
        "command": command,
        "resend_command": resend,
    }
