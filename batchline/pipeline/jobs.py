"""Job-level steps: completion with its on_complete hook, and cancellation."""

from __future__ import annotations

from typing import Any

from batchline import logs
from batchline.classify import CANCELED
from batchline.pipeline.context import Context
from batchline.pipeline.retries import flush_pool
from batchline.pipeline.status import status
from batchline.pipeline.terminal import COMPLETE_HOOK, close_chunk, deliver_hooks
from batchline.store import FINAL_JOB_STATES


def finalize_job(ctx: Context, job_id: str) -> str:
    """Mark the job completed (or canceled) once every request is terminal; hook runs once."""
    store = ctx.store
    keys = store.keys(job_id)
    opts = store.options(job_id)
    final = store.scripts.finalize(
        keys=[
            keys.job,
            store.fleet.active_jobs,
            keys.hooks_pending,
            store.fleet.stats,
            keys.hooks_sending,
        ],
        args=[store.now(), job_id, "1" if opts.on_complete else "0"],
    )
    final = final.decode() if isinstance(final, bytes) else str(final)
    if final in FINAL_JOB_STATES:
        summary = status(store, job_id, with_batches=False)
        c = summary["counts"]
        logs.event(
            f"job.{final}",
            job_id=job_id,
            succeeded=c["succeeded"],
            failed=c["failed"],
            canceled=c["canceled"],
        )
        ctx.emit(
            job_id, f"job.{final}", counts=c, cost_usd=summary["cost_usd"], metadata=opts.metadata
        )
        store.expire_job(job_id, ctx.settings.retention_s)
    if opts.on_complete:
        deliver_hooks(ctx, job_id, [COMPLETE_HOOK])
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
