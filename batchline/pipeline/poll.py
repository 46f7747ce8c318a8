"""Waiting for a batch to end by countdown retries; one live poll chain per batch."""

from __future__ import annotations

from typing import Any

from anthropic.types.messages import MessageBatch

from batchline import api, logs
from batchline.errors import BatchNotFound, PermanentApiError, RateLimited, RetryableApiError
from batchline.pipeline import snapshot
from batchline.pipeline.context import Context, Defer
from batchline.store import Chunk

# The API has answered 404 for a batch right after creating it; keep polling this long.
NOT_FOUND_GRACE_S = 120.0
# A batch ends by expires_at; past this much longer, treat it as lost and resend its requests.
EXPIRY_GRACE_S = 3600.0


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
        if now - chunk.time_field("created_at", now) < NOT_FOUND_GRACE_S:
            store.touch_chunk(job_id, number, polled_at=now)
            raise Defer(ctx.poll_delay_s(0), "batch not found yet (just created)") from None
        logs.warning("batch.lost", job_id=job_id, chunk=number, batch_id=batch_id)
        mark_ended(ctx, chunk, None, lost="not_found")
        return
    except RetryableApiError as exc:
        if exc.status == 429 and exc.retry_after_s:
            ctx.limiter.pause(exc.retry_after_s)
        store.touch_chunk(job_id, number, polled_at=now)
        raise Defer(exc.retry_after_s or ctx.backoff_s(step), str(exc)) from None
    if batch.processing_status == "ended":
        mark_ended(ctx, chunk, batch)
        return
    if now > chunk.time_field("expires_at", now + 86400) + EXPIRY_GRACE_S:
        logs.warning("batch.overdue", job_id=job_id, chunk=number, batch_id=batch_id)
        mark_ended(ctx, chunk, None, lost="overdue")
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
    logs.event(
        "batch.ended",
        job_id=chunk.job_id,
        chunk=chunk.number,
        batch_id=chunk.batch_id,
        lost=lost or None,
    )
    ctx.emit(
        chunk.job_id,
        "batch.ended",
        batch_id=chunk.batch_id,
        chunk=chunk.number,
        counts={
            k: fields.get(f"b_{k}", 0) for k in ("succeeded", "errored", "canceled", "expired")
        },
    )
    ctx.dispatch.send("batchline.fan_out_results", (chunk.job_id, chunk.number, chunk.batch_id))


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
