"""Creating one chunk's batch at most once: admission, intent, create, and after an answer that
was lost, finding the batch again by proof rather than by likeness.

The API takes no idempotency key and a batch carries no metadata, so after a create whose
outcome is unknown (a dropped connection, a timeout, a 5xx, a worker that died mid-call) the
only way to learn whether it made a batch is to look. `list` shows every batch of the
workspace, other applications' included, so a batch of the right size made at the right time
is only a *suspect*. What proves a batch is this chunk's is its results: every custom_id a
chunk sends carries the chunk's random tag (chunking.new_tag), which no other client's batch
can carry. So a chunk whose create was lost:

1. waits `create_settle_s` after the call ended, for a batch it made to show in `list`;
2. lists the batches of its size created in its window (the call's start to its end plus the
   settle time, in the API's clock: Redis time shifted by the offset the `list` answer's Date
   header shows, plus `clock_skew_s` on each side) that no other chunk has shown to be its own;
3. waits for each suspect to end, then reads the first line of its results: with the tag it
   is adopted, without it is left alone for good (never canceled, nothing of it stored);
4. creates again only when no suspect is left.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from batchline import api, logs
from batchline.chunking import (
    ENVELOPE_BYTES,
    TAG_BYTES,
    TAG_SEPARATOR,
    line_custom_id,
    new_tag,
    tag_wire,
)
from batchline.classify import CANCELED
from batchline.errors import (
    OutcomeUnknown,
    PermanentApiError,
    RateLimited,
    RetryableApiError,
)
from batchline.ingest import blob_wire
from batchline.lease import Lease
from batchline.messaging.names import TaskName
from batchline.pipeline import snapshot
from batchline.pipeline.context import Context, Defer
from batchline.pipeline.terminal import close_chunk
from batchline.store import Chunk, ChunkState
from batchline.wire import ErrorInfo

if TYPE_CHECKING:
    from anthropic.types.messages import MessageBatch

# A chunk refused admission is parked: the release or admission that makes room for it sends
# its create again at once. This later try is only a safety net (a worker that died between
# making room and sending).
ADMISSION_WAIT_S = 30.0
LEASE_WAIT_S = 2.0
READ_SLICE = 500
# Without a Date header in the `list` answer, the API's clock is assumed within this of Redis's.
UNMEASURED_OFFSET_S = 120.0
TOO_LARGE = ErrorInfo(
    type="request_too_large", message="the API refused this request as too large for a batch"
)


def chunk_body(ctx: Context, chunk: Chunk, renew: Callable[[], object]) -> api.StreamedBody:
    """The create body, streamed from Redis a slice of requests at a time, each custom_id
    followed by the chunk's tag."""
    store = ctx.store
    requests_key = store.keys(chunk.job_id).requests
    size = chunk.number_field("bytes")
    tag = chunk.fields.get("tag", "")

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
                wire = blob_wire(blob)
                wires.append(tag_wire(wire, api_id, tag) if tag else wire)
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
    """Create the chunk's batch, or find the one an earlier attempt made, then start polling."""
    store = ctx.store
    chunk = store.chunk(job_id, number)
    if chunk is None:
        logs.warning("chunk.missing", job_id=job_id, chunk=number)
        return
    if chunk.state not in (ChunkState.PENDING, ChunkState.CREATING):
        return  # already created (a redelivery): nothing to do
    if chunk.state == ChunkState.PENDING and store.cancel_requested(job_id):
        close_chunk(ctx, chunk, "canceled", CANCELED, from_states=(ChunkState.PENDING,))
        return
    if chunk.state == ChunkState.PENDING and not ctx.limiter.admit(chunk.ref, chunk.count):
        store.touch_chunk(job_id, number, waiting="admission")
        raise Defer(ADMISSION_WAIT_S, "waiting for room in the processing queue")
    lease = ctx.lease(f"create:{chunk.ref}")
    if not lease.acquire():
        raise Defer(LEASE_WAIT_S, "another worker is creating this chunk")
    try:
        chunk = store.chunk(job_id, number)  # as it is now that this worker holds the lease
        if chunk is None:
            return
        if chunk.state == ChunkState.PENDING and _may_be_lost(ctx, chunk):
            chunk = store.chunk(job_id, number) or chunk
        if chunk.state == ChunkState.CREATING:
            _settle(ctx, chunk, lease)
        elif chunk.state == ChunkState.PENDING:
            _create(ctx, chunk, lease)
    finally:
        lease.release()


def _may_be_lost(ctx: Context, chunk: Chunk) -> bool:
    """A chunk pending since before the Redis server now answering was first seen (Redis
    restarted from an older append-only file, or failed over to a replica) may have made a
    batch whose record was lost with the last writes: look for it before creating."""
    since = ctx.store.server_since()
    made = chunk.time_field("made_at")
    if made >= since or chunk.time_field("lost_check_at") >= since:
        return False
    start = max(made, chunk.time_field("last_intent_at"))
    if not ctx.store.look_first(chunk.job_id, chunk.number, start, since):
        return False
    logs.warning("batch.look_first", job_id=chunk.job_id, chunk=chunk.number, since=since)
    return True


def _create(ctx: Context, chunk: Chunk, lease: Lease) -> None:
    """Record the intent, then make the call; every way it can end is written down."""
    store = ctx.store
    attempts = chunk.number_field("create_attempts")
    try:
        ctx.limiter.take("create")
    except RateLimited as exc:
        raise Defer(exc.retry_after_s or 1, str(exc)) from None
    began, durable = store.begin_create(chunk.job_id, chunk.number)
    if began is None:
        return
    if not durable:
        # The intent could be lost with this Redis: no call that depends on it.
        store.create_refused(chunk.job_id, chunk.number)
        logs.warning("redis.not_durable", write="intent", job_id=chunk.job_id, chunk=chunk.number)
        raise Defer(ctx.backoff_s(0), "the create's intent is not durable yet; not sent")
    settled = False
    stop = _keep_renewing(lease, ctx.settings.lease_s, ctx.settings.api_timeout_s)
    try:
        batch = api.create(ctx.client, chunk_body(ctx, chunk, lease.renew))
        settled = True
    except OutcomeUnknown as exc:
        settled = True
        store.create_unknown(chunk.job_id, chunk.number, str(exc))
        logs.warning(
            "batch.create_unknown", job_id=chunk.job_id, chunk=chunk.number, error=str(exc)
        )
        raise Defer(
            ctx.settings.create_settle_s + 0.5,
            "create outcome unknown; looking for the batch once it would show in list",
        ) from None
    except RetryableApiError as exc:  # refused before anything was made (a 429)
        settled = True
        store.create_refused(chunk.job_id, chunk.number)
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
        settled = True
        if exc.status == 413 or exc.error_type == "request_too_large":
            split_chunk(ctx, chunk, str(exc))
            return
        logs.warning("batch.create_failed", job_id=chunk.job_id, chunk=chunk.number, error=str(exc))
        error = ErrorInfo(type=exc.error_type or "api_error", message=str(exc))
        store.touch_chunk(chunk.job_id, chunk.number, error=str(exc), call="")
        close_chunk(ctx, chunk, "failed", error, from_states=("creating",))
        return
    finally:
        stop()
        if not settled:  # anything else (a bug, a signal): the call may have made a batch
            store.create_unknown(chunk.job_id, chunk.number, "the create call was interrupted")
    record_created(ctx, chunk, batch, reconciled=False)


def _keep_renewing(lease: Lease, lease_s: float, timeout_s: float) -> Callable[[], None]:
    """Renew the create lease in the background while the call runs (the API may take long
    to read a large body), so no other worker takes the chunk over from a live caller."""
    done = threading.Event()
    limit = 2 * timeout_s + lease_s

    def run() -> None:
        waited = 0.0
        step = max(0.5, lease_s / 3)
        while not done.wait(step) and waited < limit:
            waited += step
            lease.renew()

    thread = threading.Thread(target=run, name="create-lease", daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        thread.join(5)

    return stop


def _settle(ctx: Context, chunk: Chunk, lease: Lease) -> None:
    """A chunk in `creating` that this worker did not start: its call's outcome is unknown.
    Find its batch by proof, or conclude there is none and create again."""
    store = ctx.store
    if chunk.fields.get("call") != "unknown":
        # The worker making the call stopped (its lease ran out) or the chunk predates this
        # record: the call ended at the latest now.
        store.create_unknown(chunk.job_id, chunk.number, "the worker making the call stopped")
        chunk = store.chunk(chunk.job_id, chunk.number) or chunk
    settle_until = chunk.time_field("ended_at") + ctx.settings.create_settle_s
    now = store.redis_now()
    if now < settle_until:
        store.touch_chunk(chunk.job_id, chunk.number, waiting="settle")
        raise Defer(settle_until - now + 0.5, "waiting for a batch the lost create may have made")
    batch = reconcile(ctx, chunk)
    if batch is not None:
        logs.event("batch.reconciled", job_id=chunk.job_id, chunk=chunk.number, batch_id=batch.id)
        record_created(ctx, chunk, batch, reconciled=True)
        return
    logs.event("batch.reconcile_none", job_id=chunk.job_id, chunk=chunk.number)
    if not store.create_refused(chunk.job_id, chunk.number):
        return
    fresh = store.chunk(chunk.job_id, chunk.number)
    if fresh is None:
        return
    if store.cancel_requested(chunk.job_id):
        close_chunk(ctx, fresh, "canceled", CANCELED, from_states=("pending",))
        return
    _create(ctx, fresh, lease)


def _total(batch: MessageBatch) -> int:
    c = batch.request_counts
    return c.processing + c.succeeded + c.errored + c.canceled + c.expired


def reconcile(ctx: Context, chunk: Chunk) -> MessageBatch | None:
    """The batch a lost create made for this chunk, shown by its results; None when none was
    made. Raises Defer while a suspect has still to end before it can be told apart."""
    store = ctx.store
    ck = store.chunk_keys(chunk.job_id, chunk.number)
    seen, (lo, hi), (call_lo, call_hi) = _list_window(ctx, chunk)
    foreign = {m.decode() for m in store.r.smembers(ck.foreign)}
    fresh = []
    for b in seen.values():
        created = b.created_at.timestamp()
        if b.id in foreign or not lo <= created <= hi or _total(b) != chunk.count:
            continue
        owner = store.r.get(store.fleet.claimed(b.id))
        if owner is not None and owner.decode() == chunk.ref:
            return b  # shown ours already (by another chunk's look, or an interrupted adoption)
        if owner is None and not store.r.exists(store.fleet.not_ours(b.id)):
            fresh.append(b.id)
    if fresh:
        store.r.sadd(ck.suspects, *fresh)
    suspects = {m.decode() for m in store.r.smembers(ck.suspects)} - foreign

    def distance(batch_id: str) -> tuple[float, str]:
        # Ours was made while its call ran: those made then are read first, so another
        # client's batches are read (one line each) only when ours is not among them.
        b = seen.get(batch_id)
        if b is None:
            return (0.0, batch_id)
        t = b.created_at.timestamp()
        return (max(0.0, call_lo - t, t - call_hi), batch_id)

    waiting = 0
    for batch_id in sorted(suspects, key=distance):
        batch = seen.get(batch_id)
        if batch is None:
            # Gone from the list (deleted), or another chunk showed it to be its own.
            store.r.srem(ck.suspects, batch_id)
            continue
        if batch.processing_status != "ended":
            waiting += 1
            continue
        owner = owner_of(ctx, chunk, batch)
        if owner == BUSY:
            waiting += 1
            continue
        if owner == chunk.ref:
            return batch
        store.r.sadd(ck.foreign, batch_id)
        store.r.srem(ck.suspects, batch_id)
        logs.event(
            "batch.not_this_chunks",
            job_id=chunk.job_id,
            chunk=chunk.number,
            batch_id=batch_id,
            batchline=owner is not None,
        )
    if waiting:
        step = chunk.number_field("verify_step")
        store.touch_chunk(
            chunk.job_id, chunk.number, waiting="verify", suspects=waiting, verify_step=step + 1
        )
        raise Defer(
            ctx.poll_delay_s(step),
            f"waiting for {waiting} batch(es) that may be this chunk's to end",
        )
    return None


def _list_window(
    ctx: Context, chunk: Chunk
) -> tuple[dict[str, MessageBatch], tuple[float, float], tuple[float, float]]:
    """Batches listed back to the start of the chunk's window; the window in the API's
    clock (the call's start to its end plus the settle time, widened by the measured offset
    between Redis's clock and the API's, plus clock_skew_s on each side); and the call's
    own span in the API's clock."""
    store = ctx.store
    s = ctx.settings
    sent = chunk.time_field("sent_at", chunk.time_field("last_intent_at"))
    ended = chunk.time_field("ended_at")
    seen: dict[str, MessageBatch] = {}
    cursor: str | None = None
    lo = hi = call_lo = call_hi = 0.0
    first = True
    while True:
        try:
            ctx.limiter.take("list")
        except RateLimited as exc:
            raise Defer(exc.retry_after_s or 1, str(exc)) from None
        before = store.redis_now()
        try:
            page, cursor, date = api.list_page_dated(ctx.client, limit=1000, after_id=cursor)
        except RetryableApiError as exc:
            raise Defer(exc.retry_after_s or ctx.backoff_s(1), str(exc)) from None
        after = store.redis_now()
        if first:
            # The answer's Date (whole seconds) was made between `before` and `after`.
            off_lo, off_hi = (
                (date - after, date + 1 - before)
                if date is not None
                else (-UNMEASURED_OFFSET_S, UNMEASURED_OFFSET_S)
            )
            lo = sent + off_lo - s.clock_skew_s
            hi = ended + s.create_settle_s + off_hi + s.clock_skew_s
            call_lo, call_hi = sent + off_lo, ended + off_hi
            first = False
        seen.update((b.id, b) for b in page)
        if cursor is None or (page and page[-1].created_at.timestamp() < lo):
            break
    return seen, (lo, hi), (call_lo, call_hi)


BUSY = "?"  # another worker is reading the batch's first line now


def owner_of(ctx: Context, chunk: Chunk, batch: MessageBatch) -> str | None:
    """Whose an ended batch is: a chunk ref ("job:n"), None for none of Batchline's, or BUSY.

    Shown once for the whole fleet: the first line of its results is read (nothing more,
    nothing of it kept) and its custom_id's tag names the chunk that sent it; the answer is
    kept (the batch's claim, or a not-ours mark), so no batch is read twice.
    """
    store = ctx.store

    def known() -> tuple[bool, str | None]:
        claim = store.r.get(store.fleet.claimed(batch.id))
        if claim is not None:
            return True, claim.decode().removeprefix("dup:")
        return bool(store.r.exists(store.fleet.not_ours(batch.id))), None

    found, owner = known()
    if found:
        return owner
    reading = ctx.lease(f"verify:{batch.id}")
    if not reading.acquire():
        return BUSY
    try:
        found, owner = known()  # another worker may have read it just before
        if found:
            return owner
        cid = _first_custom_id(ctx, batch)
        if cid is None:
            return BUSY  # not readable now (a 404 while the key is swapped, say): look again
        tag = chunk.fields.get("tag", "")
        if not tag:  # a chunk made before tags: it can only tell its job's ids
            mine = store.r.hexists(store.keys(chunk.job_id).requests, cid)
            return chunk.ref if mine else None
        if len(cid) > TAG_BYTES and cid[-TAG_BYTES] == TAG_SEPARATOR:
            raw = store.r.get(store.fleet.tag(cid[-TAG_BYTES:]))
            owner = raw.decode() if raw is not None else None
        if owner is None:
            store.r.set(store.fleet.not_ours(batch.id), 1, ex=store.tag_ttl_s())
            return None
        ttl = ctx.settings.retention_s + 86400
        store.r.set(store.fleet.claimed(batch.id), owner, nx=True, ex=ttl)
        return owner
    finally:
        reading.release()


def _first_custom_id(ctx: Context, batch: MessageBatch) -> str | None:
    """The custom_id of the first line of an ended batch's results ("" when it has none);
    None when the API refuses to show them now."""
    try:
        ctx.limiter.take("results")
    except RateLimited as exc:
        raise Defer(exc.retry_after_s or 1, str(exc)) from None
    path = api.results_path(batch.id, batch.results_url)
    try:
        for line in api.results_lines(ctx.client, path):
            return line_custom_id(line)
    except PermanentApiError:
        return None
    except RetryableApiError as exc:
        raise Defer(exc.retry_after_s or ctx.backoff_s(1), str(exc)) from None
    return ""


def record_created(ctx: Context, chunk: Chunk, batch: MessageBatch, *, reconciled: bool) -> None:
    """Adopt a batch shown to be this chunk's (its create answered, or its results carry the
    chunk's tag), start its poll chain and tell the job. A second batch for a chunk that
    already has one is canceled and counted, whatever order the two arrive in."""
    store = ctx.store
    job_id = chunk.job_id
    times = api.batch_times(batch)
    now = store.now()
    verdict = store.adopt(
        job_id,
        chunk.number,
        batch.id,
        created_at=times.get("created_at", now),
        expires_at=times.get("expires_at", now + 86400),
        status=batch.processing_status,
    )
    if verdict in ("duplicate", "duplicate_known"):
        if verdict == "duplicate":
            ctx.record(
                job_id,
                "batch.duplicate_canceled",
                level=logging.WARNING,
                batch_id=batch.id,
                chunk=chunk.number,
            )
        ctx.dispatch.send(TaskName.CANCEL_BATCH, (job_id, chunk.number, batch.id))
        return
    if verdict != "adopted":
        if verdict != "same":
            logs.warning(
                "batch.claimed_elsewhere",
                job_id=job_id,
                chunk=chunk.number,
                batch_id=batch.id,
                owner=verdict,
            )
        return
    snapshot.track(ctx, batch.id, times.get("created_at", now))
    store.job_transition(job_id, "pending", "running")
    ctx.record(
        job_id,
        "batch.created",
        batch_id=batch.id,
        chunk=chunk.number,
        requests=chunk.count,
        attempt=chunk.attempt,
        log={"reconciled": reconciled},
    )
    if store.cancel_requested(job_id):
        # The job was canceled while the create was under way: stop the batch at once.
        store.r.hincrby(store.keys(job_id).job, "canceled_after_create", 1)
        ctx.record(
            job_id,
            "batch.canceled_after_create",
            level=logging.WARNING,
            batch_id=batch.id,
            chunk=chunk.number,
        )
        ctx.dispatch.send(TaskName.CANCEL_BATCH, (job_id, chunk.number, batch.id))
    ctx.dispatch.send(
        TaskName.POLL_BATCH, (job_id, chunk.number, batch.id, 1), countdown=ctx.poll_delay_s(0)
    )


def split_chunk(ctx: Context, chunk: Chunk, reason: str) -> None:
    """The API refused the chunk as too large: its requests go into two chunks of half the
    size each, which are created in turn. A single request refused so fails."""
    store = ctx.store
    job_id = chunk.job_id
    if chunk.count <= 1:
        logs.warning("batch.create_failed", job_id=job_id, chunk=chunk.number, error=reason)
        store.touch_chunk(job_id, chunk.number, error=reason, call="")
        close_chunk(
            ctx,
            chunk,
            "failed",
            ErrorInfo(type="request_too_large", message=reason),
            from_states=("creating",),
        )
        return
    ids = store.chunk_ids(job_id, chunk.number)
    sizes: list[int] = []
    requests_key = store.keys(job_id).requests
    for start in range(0, len(ids), READ_SLICE):
        part = ids[start : start + READ_SLICE]
        for blob in store.r.hmget(requests_key, part):
            sizes.append((len(blob_wire(blob)) if blob else 0) + TAG_BYTES)
    half = len(ids) // 2
    halves = [(ids[:half], sizes[:half]), (ids[half:], sizes[half:])]
    parts = [
        (part_ids, ENVELOPE_BYTES + sum(part_sizes) + len(part_sizes) - 1, new_tag())
        for part_ids, part_sizes in halves
    ]
    numbers = store.split_chunk(chunk, parts)
    if not numbers:
        return
    ctx.limiter.release(chunk.ref)
    logs.warning(
        "batch.create_split",
        job_id=job_id,
        chunk=chunk.number,
        into=",".join(str(n) for n in numbers),
        requests=chunk.count,
        reason=reason,
    )
    ctx.limiter.enqueue(
        (f"{job_id}:{n}", len(part_ids)) for n, (part_ids, _, _) in zip(numbers, parts, strict=True)
    )
    for n in numbers:
        ctx.dispatch.send(TaskName.CREATE_BATCH, (job_id, n))
