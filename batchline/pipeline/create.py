"""Creating one chunk's batch at most once: admission, intent, create, reconcile after a crash."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from anthropic.types.messages import MessageBatch

from batchline import api, logs
from batchline.classify import CANCELED
from batchline.errors import OutcomeUnknown, PermanentApiError, RateLimited, RetryableApiError
from batchline.ingest import blob_wire
from batchline.lease import Lease
from batchline.pipeline import snapshot
from batchline.pipeline.context import Context, Defer
from batchline.pipeline.terminal import close_chunk
from batchline.store import Chunk
from batchline.wire import ErrorInfo

ADMISSION_WAIT_S = 5.0
LEASE_WAIT_S = 2.0
SLOT_WAIT_S = 0.5
CLOCK_SKEW_S = 120.0
READ_SLICE = 500


def chunk_body(ctx: Context, chunk: Chunk, renew: Callable[[], object]) -> api.StreamedBody:
    """The create body, streamed from Redis a slice of requests at a time."""
    store = ctx.store
    requests_key = store.keys(chunk.job_id).requests
    size = chunk.number_field("bytes")

    def pieces() -> Iterator[bytes]:
        sent = 0
        head = b'{"requests":['
        yield head
        sent += len(head)
        for start in range(0, chunk.count, READ_SLICE):
            ids = store.chunk_ids(chunk.job_id, chunk.number, start, start + READ_SLICE - 1)
            blobs = store.r.hmget(requests_key, ids) if ids else []
            wires = []
            for api_id, blob in zip(ids, blobs, strict=True):
                if blob is None:
                    raise RuntimeError(f"request {api_id} of {chunk.ref} is missing from Redis")
                wires.append(blob_wire(blob))
            renew()  # still alive: keep the create lease while the body streams
            piece = (b"," if start else b"") + b",".join(wires)
            sent += len(piece)
            yield piece
        sent += 2
        if sent != size:
            raise RuntimeError(f"{chunk.ref}: body is {sent} bytes, expected {size}")
        yield b"]}"

    return api.StreamedBody(pieces, size)


def create_batch(ctx: Context, job_id: str, number: int) -> None:
    """Create the chunk's batch, or find the one an earlier attempt created, then start polling."""
    store = ctx.store
    chunk = store.chunk(job_id, number)
    if chunk is None:
        logs.warning("chunk.missing", job_id=job_id, chunk=number)
        return
    if chunk.state not in ("pending", "creating"):
        return  # already created (a redelivery): nothing to do
    if chunk.state == "pending" and store.cancel_requested(job_id):
        close_chunk(ctx, chunk, "canceled", CANCELED, from_states=("pending",))
        return
    if not ctx.limiter.admit(chunk.ref, chunk.count):
        store.touch_chunk(job_id, number, waiting="admission")
        raise Defer(ADMISSION_WAIT_S, "waiting for room in the processing queue")
    lease = ctx.lease(f"create:{chunk.ref}")
    if not lease.acquire():
        raise Defer(LEASE_WAIT_S, "another worker is creating this chunk")
    try:
        _create_locked(ctx, chunk, lease)
    finally:
        lease.release()


def create_slot(ctx: Context, chunk: Chunk) -> Lease:
    """One unsettled create per request count, fleet-wide.

    A lost create answer is reconciled by creation window and request count, which cannot
    tell apart two batches of the same size made in one window. So a chunk holds the slot of
    its size from before its create until the batch id is known; after a lost answer it keeps
    it until reconciliation settles it, or until the slot runs out, by which time the
    chunk's window has closed. Every run of the chunk's create is the same holder.
    """
    ttl_s = ctx.settings.api_timeout_s + 2 * CLOCK_SKEW_S + 60
    return Lease(ctx.store.r, ctx.store.fleet.create_slot(chunk.count), ttl_s, token=chunk.ref)


def _create_locked(ctx: Context, chunk: Chunk, lease: Lease) -> None:
    slot = create_slot(ctx, chunk)
    if not slot.renew():
        raise Defer(SLOT_WAIT_S, "a batch of the same size is being created")
    try:
        _create_in_slot(ctx, chunk, lease)
    finally:
        # Settled once the chunk has a batch, has failed, or never began a create; a create
        # begun and not recorded (a lost answer, a crash, an error) keeps the slot for the
        # chunk's next run.
        state = ctx.store.r.hget(ctx.store.chunk_keys(chunk.job_id, chunk.number).meta, "state")
        if state != b"creating":
            slot.release()


def _create_in_slot(ctx: Context, chunk: Chunk, lease: Lease) -> None:
    store = ctx.store
    attempts = chunk.number_field("create_attempts")
    if chunk.state == "creating":
        found = reconcile(ctx, chunk)
        if found is not None:
            record_created(ctx, chunk, found, reconciled=True)
            return
    try:
        ctx.limiter.take("create")
    except RateLimited as exc:
        raise Defer(exc.retry_after_s or 1, str(exc)) from None
    now = store.now()
    fields: dict[str, Any] = {"last_intent_at": now, "create_attempts": attempts + 1, "waiting": ""}
    if not chunk.fields.get("intent_at"):
        fields["intent_at"] = now
    if not store.transition(
        chunk.job_id, chunk.number, ("pending", "creating"), "creating", **fields
    ):
        return
    try:
        batch = api.create(ctx.client, chunk_body(ctx, chunk, lease.renew))
    except OutcomeUnknown as exc:
        store.touch_chunk(chunk.job_id, chunk.number, uncertain=1)
        logs.warning(
            "batch.create_unknown", job_id=chunk.job_id, chunk=chunk.number, error=str(exc)
        )
        raise Defer(ctx.backoff_s(attempts), "create outcome unknown; reconcile next") from None
    except RetryableApiError as exc:
        if exc.status == 429 and exc.retry_after_s:
            ctx.limiter.pause(exc.retry_after_s)
        delay = exc.retry_after_s or ctx.backoff_s(attempts)
        logs.warning(
            "batch.create_retry",
            job_id=chunk.job_id,
            chunk=chunk.number,
            error=str(exc),
            delay_s=round(delay, 2),
        )
        raise Defer(delay, str(exc)) from None
    except PermanentApiError as exc:
        logs.warning("batch.create_failed", job_id=chunk.job_id, chunk=chunk.number, error=str(exc))
        error = ErrorInfo(type=exc.error_type or "api_error", message=str(exc))
        store.touch_chunk(chunk.job_id, chunk.number, error=str(exc))
        close_chunk(ctx, chunk, "failed", error, from_states=("creating",))
        return
    record_created(ctx, chunk, batch, reconciled=False)


def _total(batch: MessageBatch) -> int:
    c = batch.request_counts
    return c.processing + c.succeeded + c.errored + c.canceled + c.expired


def _window_matches(ctx: Context, chunk: Chunk) -> list[MessageBatch]:
    """Batches with the chunk's request count, created in the window around its create
    attempts, that no other chunk has claimed; oldest first."""
    store = ctx.store
    since = chunk.time_field("intent_at") - CLOCK_SKEW_S
    until = (
        chunk.time_field("last_intent_at", chunk.time_field("intent_at"))
        + ctx.settings.api_timeout_s
        + CLOCK_SKEW_S
    )
    matches: list[MessageBatch] = []
    cursor: str | None = None
    while True:
        try:
            ctx.limiter.take("list")
        except RateLimited as exc:
            raise Defer(exc.retry_after_s or 1, str(exc)) from None
        try:
            page, cursor = api.list_page(ctx.client, limit=1000, after_id=cursor)
        except RetryableApiError as exc:
            raise Defer(exc.retry_after_s or ctx.backoff_s(1), str(exc)) from None
        older = False
        for b in page:
            created = b.created_at.timestamp()
            if created < since:
                older = True
                break
            if created <= until and _total(b) == chunk.count:
                owner = store.r.get(store.fleet.claimed(b.id))
                if owner is None or owner.decode() == chunk.ref:
                    matches.append(b)
        if older or cursor is None:
            break
    return sorted(matches, key=lambda b: b.created_at)


def reconcile(ctx: Context, chunk: Chunk) -> MessageBatch | None:
    """Find the batch an earlier attempt created: same request count, created in the window
    around the recorded intent, not claimed by another chunk. Extra matches are canceled."""
    candidates = _window_matches(ctx, chunk)
    if not candidates:
        logs.event("batch.reconcile_none", job_id=chunk.job_id, chunk=chunk.number)
        return None
    keep, extra = candidates[0], candidates[1:]
    if extra and not _sibling_creating(ctx, chunk):
        for dup in extra:
            cancel_duplicate(ctx, chunk, dup.id)
    logs.event("batch.reconciled", job_id=chunk.job_id, chunk=chunk.number, batch_id=keep.id)
    return keep


def check_duplicates(ctx: Context, chunk: Chunk) -> int:
    """After an uncertain create (a lost answer, or the SDK's own retries), look once more,
    when the window has closed, for a second batch made for this chunk, and cancel it."""
    found = 0
    if not _sibling_creating(ctx, chunk):
        for b in _window_matches(ctx, chunk):
            if b.id != chunk.batch_id:
                cancel_duplicate(ctx, chunk, b.id)
                found += 1
    ctx.store.r.zrem(ctx.store.fleet.dup_checks, chunk.ref)
    return found


def _sibling_creating(ctx: Context, chunk: Chunk) -> bool:
    """Another chunk of the job with the same size may own an unclaimed match."""
    return any(
        c.number != chunk.number and c.state == "creating" and c.count == chunk.count
        for c in ctx.store.chunks(chunk.job_id)
    )


def cancel_duplicate(ctx: Context, chunk: Chunk, batch_id: str) -> None:
    """Cancel a second batch made for one chunk, and report it on the job."""
    store = ctx.store
    if not store.r.set(
        store.fleet.claimed(batch_id), f"dup:{chunk.ref}", nx=True, ex=ctx.settings.retention_s
    ):
        return
    ctx.dispatch.send("batchline.cancel_batch", (chunk.job_id, chunk.number, batch_id))
    store.r.hincrby(store.keys(chunk.job_id).job, "duplicates_canceled", 1)
    logs.warning(
        "batch.duplicate_canceled", job_id=chunk.job_id, chunk=chunk.number, batch_id=batch_id
    )


def record_created(ctx: Context, chunk: Chunk, batch: MessageBatch, *, reconciled: bool) -> None:
    """Claim the batch for the chunk, start its poll chain, and tell the job."""
    store = ctx.store
    job_id = chunk.job_id
    claimed = store.r.set(
        store.fleet.claimed(batch.id), chunk.ref, nx=True, ex=ctx.settings.retention_s + 86400
    )
    if not claimed:
        owner = store.r.get(store.fleet.claimed(batch.id))
        if owner is None or owner.decode() != chunk.ref:
            raise RuntimeError(f"batch {batch.id} is already claimed by {owner!r}")
    times = api.batch_times(batch)
    now = store.now()
    moved = store.transition(
        job_id,
        chunk.number,
        "creating",
        "in_progress",
        batch_id=batch.id,
        created_at=times.get("created_at", now),
        expires_at=times.get("expires_at", now + 86400),
        poll_gen=1,
        poll_step=0,
        polled_at=now,
        status=batch.processing_status,
    )
    if not moved:
        current = store.chunk(job_id, chunk.number)
        if current is not None and current.batch_id not in (None, batch.id):
            # Two creates raced (a lease ran out under a slow upload): keep the first.
            cancel_duplicate(ctx, chunk, batch.id)
        return
    snapshot.track(ctx, batch.id, times.get("created_at", now))
    if reconciled or chunk.fields.get("uncertain") or ctx.settings.sdk_max_retries:
        # An answer was lost, or the SDK may have retried on its own: look for a second batch
        # once any straggler would show in the list.
        store.r.zadd(store.fleet.dup_checks, {chunk.ref: now + ctx.settings.stall_s})
    store.job_transition(job_id, "pending", "running")
    logs.event(
        "batch.created",
        job_id=job_id,
        chunk=chunk.number,
        batch_id=batch.id,
        requests=chunk.count,
        attempt=chunk.attempt,
        reconciled=reconciled,
    )
    ctx.emit(
        job_id,
        "batch.created",
        batch_id=batch.id,
        chunk=chunk.number,
        requests=chunk.count,
        attempt=chunk.attempt,
    )
    if store.cancel_requested(job_id):
        ctx.dispatch.send("batchline.cancel_batch", (job_id, chunk.number, batch.id))
    ctx.dispatch.send(
        "batchline.poll_batch", (job_id, chunk.number, batch.id, 1), countdown=ctx.poll_delay_s(0)
    )
