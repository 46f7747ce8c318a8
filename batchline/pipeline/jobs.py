"""Job-level steps: completion with its on_complete hook, cancellation, and the status view."""

from __future__ import annotations

from typing import Any

from batchline import logs
from batchline.classify import CANCELED
from batchline.pipeline.context import Context
from batchline.pipeline.retries import flush_pool
from batchline.pipeline.terminal import close_chunk, hook_task_id
from batchline.pricing import NANO
from batchline.store import FINAL_JOB_STATES, Store
from batchline.wire import loads

USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                "cache_read_input_tokens")


def finalize_job(ctx: Context, job_id: str) -> str:
    """Mark the job completed (or canceled) once every request is terminal; hook runs once."""
    store = ctx.store
    keys = store.keys(job_id)
    opts = store.options(job_id)
    final = store.scripts.finalize(
        keys=[keys.job, store.fleet.active_jobs],
        args=[store.now(), job_id, "1" if opts.on_complete else "0"],
    )
    final = final.decode() if isinstance(final, bytes) else str(final)
    if final in FINAL_JOB_STATES:
        summary = status(store, job_id, with_batches=False)
        logs.event(f"job.{final}", job_id=job_id, succeeded=summary["counts"]["succeeded"],
                   failed=summary["counts"]["failed"], canceled=summary["counts"]["canceled"])
        ctx.emit(job_id, f"job.{final}", counts=summary["counts"], cost_usd=summary["cost_usd"],
                 metadata=opts.metadata)
        store.expire_job(job_id, ctx.settings.retention_s)
    if store.r.hget(keys.job, "complete_hook_pending") == b"1" and opts.on_complete:
        summary = status(store, job_id, with_batches=False)
        ctx.dispatch.send_hook(opts.on_complete, (job_id, summary),
                               hook_task_id(job_id, "", "on_complete"), opts.hook_queue)
        store.r.hset(keys.job, "complete_hook_pending", "0")
    return final


def cancel_job(ctx: Context, job_id: str) -> dict[str, Any]:
    """Stop a job: batches canceled at the API, no retries, unfinished requests `canceled`."""
    store = ctx.store
    keys = store.keys(job_id)
    state = store.job_state(job_id)
    if state in FINAL_JOB_STATES or state is None:
        return status(store, job_id)
    store.r.hset(keys.job, mapping={"cancel_requested": "1", "state": "canceling"})
    logs.event("job.canceling", job_id=job_id)
    for chunk in store.chunks(job_id):
        if chunk.state == "pending":
            close_chunk(ctx, chunk, "canceled", CANCELED, from_states=("pending",))
        elif chunk.state in ("creating", "in_progress") and chunk.batch_id:
            ctx.dispatch.send("batchline.cancel_batch", (job_id, chunk.number, chunk.batch_id))
    flush_pool(ctx, job_id)
    ctx.dispatch.send("batchline.finalize_job", (job_id,))
    return status(store, job_id)


def status(store: Store, job_id: str, with_batches: bool = True) -> dict[str, Any]:
    """The job as callers see it: state, counts, batches, usage and cost."""
    f = store.job_fields(job_id)

    def num(name: str) -> int:
        return int(f.get(name) or 0)

    counts = {name: num(name) for name in ("total", "succeeded", "failed", "canceled",
                                           "rejected")}
    counts["in_flight"] = num("accepted") - counts["succeeded"] - counts["failed"] \
        - counts["canceled"]
    state = f.get("state", "pending")
    if state == "ingesting":
        state = "pending"
    out: dict[str, Any] = {
        "job_id": job_id,
        "state": state,
        "counts": counts,
        "usage": {name: num(name) for name in USAGE_FIELDS},
        "cost_usd": round(num("cost_nusd") / NANO, 6),
        "estimated_cost_usd": float(f.get("estimated_cost_usd") or 0),
        "retried": num("retried"),
        "cache_hits": num("cache_hits"),
        "deduplicated": num("deduplicated"),
        "duplicates_canceled": num("duplicates_canceled"),
        "metadata": loads(f["metadata"]) if f.get("metadata") else None,
        "submitted_at": float(f.get("submitted_at") or f.get("created_at") or 0),
        "ended_at": float(f["ended_at"]) if f.get("ended_at") else None,
    }
    if with_batches:
        out["batches"] = [
            {
                "chunk": c.number,
                "batch_id": c.batch_id,
                "attempt": c.attempt,
                "status": c.state,
                "requests": c.count,
                "processed": c.int("processed"),
                "counts": {k: c.int(f"b_{k}") for k in ("succeeded", "errored", "canceled",
                                                        "expired")},
                "error": c.fields.get("error") or None,
            }
            for c in store.chunks(job_id)
        ]
    return out
