"""Job-level steps: completion with its final event and on_complete hook, and cancellation."""

from __future__ import annotations

from typing import Any

from batchline import logs
from batchline.classify import CANCELED
from batchline.messaging.names import TaskName
from batchline.pipeline.context import Context
from batchline.pipeline.retries import flush_pool
from batchline.pipeline.status import status
from batchline.pipeline.terminal import COMPLETE_HOOK, close_chunk, deliver_hooks
from batchline.store import FINAL_JOB_STATES


def finalize_job(ctx: Context, job_id: str) -> str:
    """Mark the job completed (or canceled) once every request is terminal; its final event
    is written once and its on_complete hook runs once."""
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
        c = status(store, job_id, with_batches=False)["counts"]
        logs.event(
            f"job.{final}",
            job_id=job_id,
            succeeded=c["succeeded"],
            failed=c["failed"],
            canceled=c["canceled"],
        )
        store.expire_job(job_id, ctx.settings.retention_s)
    if final in FINAL_JOB_STATES or final == "":
        emit_final(ctx, job_id)
    if opts.on_complete:
        deliver_hooks(ctx, job_id, [COMPLETE_HOOK])
    release(ctx, job_id)
    return final


def emit_final(ctx: Context, job_id: str) -> bool:
    """Write the finished job's job.completed or job.canceled event, unless it has one."""
    store = ctx.store
    summary = status(store, job_id, with_batches=False)
    if summary["state"] not in FINAL_JOB_STATES:
        return False
    if store.r.hexists(store.keys(job_id).job, "final_event_id"):
        return False
    return ctx.emit(
        job_id,
        f"job.{summary['state']}",
        final=True,
        counts=summary["counts"],
        cost_usd=summary["cost_usd"],
        metadata=summary["metadata"],
    )


def release(ctx: Context, job_id: str) -> bool:
    """A finished job with its final event written and no hook left leaves the active set."""
    store = ctx.store
    keys = store.keys(job_id)
    return bool(
        store.scripts.release_job(
            keys=[keys.job, store.fleet.active_jobs, keys.hooks_pending, keys.hooks_sending],
            args=[job_id],
        )
        == 1
    )


def cancel_job(ctx: Context, job_id: str) -> dict[str, Any]:
    """Stop a job: batches canceled at the API, no retries, unfinished requests `canceled`.

    The request is one atomic step against completion: a job that already completed stays
    completed (and its on_complete hook is not sent again); one that has not ends
    `canceled`. Chunks stop in whatever state they are: pending ones end now, batches at
    the API are canceled, a create under way is canceled as soon as it answers, results
    already coming are recorded, retries are not sent, blocked chunks end `canceled`.
    """
    store = ctx.store
    keys = store.keys(job_id)
    before = store.scripts.cancel_job(keys=[keys.job])
    before = before.decode() if isinstance(before, bytes) else str(before)
    if before == "missing" or before in FINAL_JOB_STATES:
        return status(store, job_id)  # raises JobNotFound for a missing job
    logs.event("job.canceling", job_id=job_id, was=before)
    for chunk in store.chunks(job_id):
        if chunk.state == "pending":
            close_chunk(ctx, chunk, "canceled", CANCELED, from_states=("pending",))
        elif chunk.state == "blocked":
            if chunk.batch_id:  # it may answer again; then it stops too
                ctx.dispatch.send(TaskName.CANCEL_BATCH, (job_id, chunk.number, chunk.batch_id))
            close_chunk(ctx, chunk, "canceled", CANCELED, from_states=("blocked",))
        elif chunk.state == "in_progress" and chunk.batch_id:
            ctx.dispatch.send(TaskName.CANCEL_BATCH, (job_id, chunk.number, chunk.batch_id))
        elif chunk.state == "creating":
            # The create path checks the cancel once the call's outcome is known: a batch
            # made is canceled at once; none made, the chunk ends canceled.
            ctx.dispatch.send(TaskName.CREATE_BATCH, (job_id, chunk.number))
    flush_pool(ctx, job_id)
    ctx.dispatch.send(TaskName.FINALIZE_JOB, (job_id,))
    return status(store, job_id)
