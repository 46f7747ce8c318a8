"""Job-level steps: completion with its final event and on_complete hook, and cancellation."""

from __future__ import annotations

from typing import Any

from batchline import logs
from batchline import scripts as lua
from batchline.classify import CANCELED
from batchline.messaging.names import TaskName
from batchline.pipeline.context import Context
from batchline.pipeline.retries import flush_pool
from batchline.pipeline.status import status
from batchline.pipeline.terminal import COMPLETE_HOOK, close_chunk, deliver_hooks
from batchline.store import FINAL_JOB_STATES, ChunkState


def finalize_job(ctx: Context, job_id: str) -> str:
    """Mark the job completed (or canceled) once every request is terminal; its final event
    is written once and its on_complete hook runs once."""
    store = ctx.store
    keys = store.keys(job_id)
    opts = store.options(job_id)
    final = lua.FINALIZE(
        store.r,
        lua.FinalizeKeys(
            job=keys.job,
            active_jobs=store.fleet.active_jobs,
            hooks_pending=keys.hooks_pending,
            stats=store.fleet.stats,
            hooks_sending=keys.hooks_sending,
        ),
        lua.FinalizeArgs(store.now(), job_id, "1" if opts.on_complete else "0"),
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
        lua.RELEASE_JOB(
            store.r,
            lua.ReleaseJobKeys(
                job=keys.job,
                active_jobs=store.fleet.active_jobs,
                hooks_pending=keys.hooks_pending,
                hooks_sending=keys.hooks_sending,
            ),
            lua.JobIdArg(job_id),
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
    before = lua.CANCEL_JOB(store.r, lua.JobKey(keys.job), lua.NoArgs())
    before = before.decode() if isinstance(before, bytes) else str(before)
    if before == "missing" or before in FINAL_JOB_STATES:
        return status(store, job_id)  # raises JobNotFound for a missing job
    logs.event("job.canceling", job_id=job_id, was=before)
    for chunk in store.chunks(job_id):
        if chunk.state == ChunkState.PENDING:
            close_chunk(ctx, chunk, "canceled", CANCELED, from_states=(ChunkState.PENDING,))
        elif chunk.state == ChunkState.BLOCKED:
            if chunk.batch_id:  # it may answer again; then it stops too
                ctx.dispatch.send(TaskName.CANCEL_BATCH, (job_id, chunk.number, chunk.batch_id))
            close_chunk(ctx, chunk, "canceled", CANCELED, from_states=(ChunkState.BLOCKED,))
        elif chunk.state == ChunkState.IN_PROGRESS and chunk.batch_id:
            ctx.dispatch.send(TaskName.CANCEL_BATCH, (job_id, chunk.number, chunk.batch_id))
        elif chunk.state == ChunkState.CREATING:
            # The create path checks the cancel once the call's outcome is known: a batch
            # made is canceled at once; none made, the chunk ends canceled.
            ctx.dispatch.send(TaskName.CREATE_BATCH, (job_id, chunk.number))
    flush_pool(ctx, job_id)
    ctx.dispatch.send(TaskName.FINALIZE_JOB, (job_id,))
    return status(store, job_id)
