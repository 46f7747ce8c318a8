"""Waiting for a batch to end by countdown retries; one live poll chain per batch."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from batchline import api, logs
from batchline.errors import BatchNotFound, PermanentApiError, RateLimited, RetryableApiError
from batchline.messaging.names import TaskName
from batchline.pipeline import snapshot
from batchline.pipeline.context import Context, Defer
from batchline.store import Chunk

if TYPE_CHECKING:
    from anthropic.types.messages import MessageBatch

UNBLOCK_HINT = "batchline unblock {job} --chunk {chunk}"


def poll_batch(ctx: Context, job_id: str, number: int, batch_id: str, gen: int) -> None:
    """Retrieve the batch; reschedule while it runs, hand over to the fan-out once it ended."""
    store = ctx.store
    chunk = store.chunk(job_id, number)
    if (
        chunk is None
        or chunk.state != "in_progress"
        or chunk.batch_id != batch_id
        or chunk.number_field("poll_gen") != gen
    ):
        return  # a stale chain: the batch ended, or the sweeper started a newer chain
    step = chunk.number_field("poll_step")
    batch = snapshot.lookup(ctx, batch_id) if snapshot.use_list(ctx) else None
    now = store.now()
    try:
        if batch is None:
            batch = _retrieve(ctx, batch_id)
    except BatchNotFound:
        if now - chunk.time_field("created_at", now) < ctx.settings.not_found_grace_s:
            store.touch_chunk(job_id, number, polled_at=now)
            raise Defer(ctx.poll_delay_s(0), "batch not found yet (just created)") from None
        # Seen before, gone now: a key of another workspace, or a batch deleted elsewhere.
        # Its requests may still be running there, so they are not sent again on a guess.
        block(ctx, chunk, "not_found", "the API answers 404 for this batch, which it showed before")
        return
    except RetryableApiError as exc:
        if exc.status == 429 and exc.retry_after_s:
            ctx.limiter.pause(exc.retry_after_s)
        store.touch_chunk(job_id, number, polled_at=now)
        raise Defer(exc.retry_after_s or ctx.backoff_s(step), str(exc)) from None
    if batch.processing_status == "ended":
        mark_ended(ctx, chunk, batch)
        return
    grace = ctx.settings.overdue_grace_s
    if now > chunk.time_field("expires_at", now + 86400) + grace:
        canceled_at = chunk.time_field("overdue_cancel_at")
        if not canceled_at:
            # Every batch ends by its expiry; one that has not is stopped, then waited for.
            logs.warning("batch.overdue", job_id=job_id, chunk=number, batch_id=batch_id)
            store.touch_chunk(job_id, number, overdue_cancel_at=now)
            ctx.dispatch.send(TaskName.CANCEL_BATCH, (job_id, number, batch_id))
        elif now > canceled_at + grace:
            block(ctx, chunk, "overdue", "in progress past its expiry, and still after a cancel")
            return
    store.touch_chunk(
        job_id, number, polled_at=now, poll_step=step + 1, status=batch.processing_status
    )
    raise Defer(ctx.poll_delay_s(step + 1), f"batch {batch.processing_status}")


def _retrieve(ctx: Context, batch_id: str) -> MessageBatch:
    try:
        ctx.limiter.take("retrieve")
    except RateLimited as exc:
        raise Defer(exc.retry_after_s or 1, str(exc)) from None
    return api.retrieve(ctx.client, batch_id)


def mark_ended(ctx: Context, chunk: Chunk, batch: MessageBatch | None, lost: str = "") -> None:
    """Record the end of a batch once and start its fan-out."""
    store = ctx.store
    now = store.now()
    fields: dict[str, Any] = {
        "ended_at": now,
        "seen_ended_at": now,
        "status": "ended",
        "lost": lost,
    }
    if batch is not None:
        c = batch.request_counts
        fields.update(
            results_url=batch.results_url or "",
            b_succeeded=c.succeeded,
            b_errored=c.errored,
            b_canceled=c.canceled,
            b_expired=c.expired,
        )
        if batch.ended_at is not None:
            fields["ended_at"] = batch.ended_at.timestamp()
    if not store.transition(chunk.job_id, chunk.number, "in_progress", "ended", **fields):
        return
    ctx.limiter.release(chunk.ref)
    if chunk.batch_id:
        snapshot.untrack(ctx, chunk.batch_id)
    counts = {k: fields.get(f"b_{k}", 0) for k in ("succeeded", "errored", "canceled", "expired")}
    ctx.record(
        chunk.job_id,
        "batch.ended",
        batch_id=chunk.batch_id,
        chunk=chunk.number,
        log={"lost": lost or None},
        event={"counts": counts},
    )
    ctx.dispatch.send(TaskName.FAN_OUT_RESULTS, (chunk.job_id, chunk.number, chunk.batch_id))


def block(ctx: Context, chunk: Chunk, reason: str, error: str) -> bool:
    """Stop working on a chunk whose batch needs an operator's decision (`batchline unblock`):
    nothing is sent again on a guess while its requests may still be running."""
    store = ctx.store
    now = store.now()
    if not store.transition(
        chunk.job_id,
        chunk.number,
        ("in_progress", "ended"),
        "blocked",
        blocked_reason=reason,
        blocked_error=error,
        blocked_at=now,
        blocked_checked_at=now,
        blocked_from=chunk.state,
    ):
        return False
    hint = UNBLOCK_HINT.format(job=chunk.job_id, chunk=chunk.number)
    ctx.record(
        chunk.job_id,
        "batch.blocked",
        level=logging.WARNING,
        batch_id=chunk.batch_id,
        chunk=chunk.number,
        reason=reason,
        error=error,
        command=hint,
    )
    return True


def unblock(ctx: Context, job_id: str, number: int, resend: bool = False) -> dict[str, Any]:
    """Look at a blocked chunk's batch again: found, it is polled (or its results read) as
    before. With `resend`, a batch the API no longer shows is given up and its requests that
    have no result are sent again (if it answers after all, it is canceled first, never
    duplicated)."""
    store = ctx.store
    chunk = store.chunk(job_id, number)
    if chunk is None or chunk.state != "blocked" or not chunk.batch_id:
        state = chunk.state if chunk else "missing"
        return {"chunk": number, "state": state, "message": f"chunk {number} is {state}"}
    batch_id = chunk.batch_id
    back = chunk.fields.get("blocked_from") or "in_progress"
    try:
        if resend:
            ctx.limiter.take("cancel")
            batch = api.cancel(ctx.client, batch_id)
        else:
            batch = _retrieve(ctx, batch_id)
    except RateLimited as exc:
        raise Defer(exc.retry_after_s or 1, str(exc)) from None
    except BatchNotFound:
        if not resend:
            store.touch_chunk(job_id, number, blocked_checked_at=store.now())
            return {"chunk": number, "state": "blocked", "message": "the API still answers 404"}
        return _resend(ctx, chunk)
    except PermanentApiError as exc:
        if not resend:  # e.g. a cancel refused because the batch already ended: it is there
            raise
        batch = None
        logs.event("batch.cancel_refused", job_id=job_id, batch_id=batch_id, error=str(exc))
    except RetryableApiError as exc:
        raise Defer(exc.retry_after_s or ctx.backoff_s(1), str(exc)) from None
    # The batch answers again: carry on where the chunk stopped.
    now = store.now()
    if back == "ended" or (batch is not None and batch.processing_status == "ended"):
        if back == "in_progress" and batch is not None:
            if store.transition(job_id, number, "blocked", "in_progress", blocked_reason=""):
                mark_ended(ctx, store.chunk(job_id, number) or chunk, batch)
        elif store.transition(job_id, number, "blocked", "ended", blocked_reason="",
                              fanout_runs=0, fanout_failures=0, fanout_done=""):  # fmt: skip
            ctx.dispatch.send(TaskName.FAN_OUT_RESULTS, (job_id, number, batch_id))
    else:
        meta = store.chunk_keys(job_id, number).meta
        if store.transition(job_id, number, "blocked", "in_progress", blocked_reason="",
                            polled_at=now, overdue_cancel_at=""):  # fmt: skip
            gen = int(store.r.hincrby(meta, "poll_gen", 1))
            ctx.dispatch.send(TaskName.POLL_BATCH, (job_id, number, batch_id, gen))
    ctx.record(job_id, "batch.unblocked", batch_id=batch_id, chunk=number)
    return {"chunk": number, "state": "resumed", "message": f"batch {batch_id} answers again"}


def _resend(ctx: Context, chunk: Chunk) -> dict[str, Any]:
    """Give up a batch the API no longer shows: requests without a result are sent again."""
    store = ctx.store
    if not store.transition(
        chunk.job_id, chunk.number, "blocked", "ended",
        lost="resent", results_url="", fanout_done="", fanout_runs=0, fanout_failures=0,
        ended_at=store.now(),
    ):  # fmt: skip
        return {"chunk": chunk.number, "state": "blocked", "message": "changed meanwhile"}
    ctx.limiter.release(chunk.ref)
    if chunk.batch_id:
        snapshot.untrack(ctx, chunk.batch_id)
    ctx.record(
        chunk.job_id,
        "batch.resent",
        level=logging.WARNING,
        batch_id=chunk.batch_id,
        chunk=chunk.number,
    )
    ctx.dispatch.send(TaskName.FAN_OUT_RESULTS, (chunk.job_id, chunk.number, chunk.batch_id))
    return {"chunk": chunk.number, "state": "resent", "message": "requests sent again"}


def cancel_batch(ctx: Context, job_id: str, number: int, batch_id: str) -> None:
    """Ask the API to cancel a batch; its poll chain sees it end."""
    try:
        ctx.limiter.take("cancel")
    except RateLimited as exc:
        raise Defer(exc.retry_after_s or 1, str(exc)) from None
    try:
        api.cancel(ctx.client, batch_id)
    except RetryableApiError as exc:
        raise Defer(exc.retry_after_s or ctx.backoff_s(1), str(exc)) from None
    except PermanentApiError as exc:  # already ended, or gone: nothing to cancel
        logs.event("batch.cancel_refused", job_id=job_id, batch_id=batch_id, error=str(exc))
        return
    logs.event("batch.cancel_requested", job_id=job_id, chunk=number, batch_id=batch_id)
