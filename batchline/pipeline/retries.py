"""Planning retry batches: a finished chunk's retryable requests go to the job's pool, and the
pool becomes new chunks once no other batch of the job is still out (or a batch is full)."""

from __future__ import annotations

from batchline import logs
from batchline import scripts as lua
from batchline.chunking import TAG_BYTES, Chunker, new_tag
from batchline.classify import CANCELED, Outcome
from batchline.ingest import blob_wire
from batchline.messaging.names import TaskName
from batchline.pipeline.context import Context
from batchline.pipeline.results import record_outcomes

POOL_CHUNK = "pool"  # see keys.PSEUDO_CHUNKS


def plan_retries(ctx: Context, job_id: str, number: int) -> None:
    """Close an ended chunk whose results are all recorded, then flush the pool if due."""
    store = ctx.store
    keys = store.keys(job_id)
    ck = keys.chunk(number)
    moved, open_chunks, pool = lua.PLAN(
        store.r,
        lua.PlanKeys(meta=ck.meta, retry=ck.retry, job=keys.job, pool=keys.retry_pool),
        lua.NowArg(store.now()),
    )
    if moved == 1:
        batch_id = store.r.hget(ck.meta, "batch_id")
        logs.event(
            "chunk.done",
            job_id=job_id,
            chunk=number,
            batch_id=batch_id.decode() if batch_id else None,
            open_chunks=open_chunks,
            pool=pool,
        )
    if pool and (open_chunks <= 0 or pool >= ctx.settings.max_batch_requests):
        flush_pool(ctx, job_id)
    elif open_chunks <= 0:
        ctx.dispatch.send(TaskName.FINALIZE_JOB, (job_id,))


def flush_pool(ctx: Context, job_id: str) -> int:
    """Turn the pool into retry chunks (or cancel it when the job was canceled)."""
    store = ctx.store
    lease = ctx.lease(f"flush:{job_id}")
    if not lease.acquire():
        return 0  # another worker is flushing; the sweeper checks again later
    try:
        if store.cancel_requested(job_id):
            return _cancel_pool(ctx, job_id)
        made = 0
        while _make_chunk(ctx, job_id):
            made += 1
        return made
    finally:
        lease.release()


def _cancel_pool(ctx: Context, job_id: str) -> int:
    store = ctx.store
    pool = store.keys(job_id).retry_pool
    ended = 0
    while ids := [i.decode() for i in store.r.lrange(pool, 0, 999)]:
        record_outcomes(ctx, job_id, POOL_CHUNK, {i: Outcome("retry", error=CANCELED) for i in ids})
        store.r.ltrim(pool, len(ids), -1)
        ended += len(ids)
    return ended


def _make_chunk(ctx: Context, job_id: str) -> bool:
    """Cut the head of the pool into one chunk within the batch limits; False when empty."""
    store = ctx.store
    s = ctx.settings
    keys = store.keys(job_id)
    ids = [i.decode() for i in store.r.lrange(keys.retry_pool, 0, s.max_batch_requests - 1)]
    if not ids:
        return False
    chunker = Chunker(s.max_batch_requests, s.max_batch_bytes)
    taken = 0
    body = 0
    for start in range(0, len(ids), 1000):
        part = ids[start : start + 1000]
        blobs = store.r.hmget(keys.requests, part)
        stop = False
        for blob in blobs:
            size = (len(blob_wire(blob)) if blob else 0) + TAG_BYTES
            if chunker.add(size):
                stop = True
                break
            taken += 1
            body = chunker.body_bytes
        if stop:
            break
    number = int(store.r.hincrby(keys.job, "chunk_seq", 1)) - 1
    chunk = keys.chunk(number)
    tag = new_tag()
    pipe = store.r.pipeline(transaction=False)
    store.register_tags(pipe, {tag: f"{job_id}:{number}"})
    pipe.execute()
    attempt = lua.MAKE_RETRY_CHUNK(
        store.r,
        lua.MakeRetryChunkKeys(
            job=keys.job,
            pool=keys.retry_pool,
            chunks=keys.chunks,
            retries=keys.retries,
            meta=chunk.meta,
            ids=chunk.ids,
            stats=store.fleet.stats,
        ),
        lua.MakeRetryChunkArgs(
            n=taken,
            first_id=ids[0],
            last_id=ids[taken - 1],
            number=number,
            body_bytes=body,
            now=store.redis_now(),
            tag=tag,
        ),
    )
    if not attempt:
        return True  # the pool changed under us: look again
    logs.event(
        "chunk.retry_made", job_id=job_id, chunk=number, requests=taken, attempt=int(attempt)
    )
    ctx.limiter.enqueue([(f"{job_id}:{number}", taken)])
    ctx.dispatch.send(TaskName.CREATE_BATCH, (job_id, number))
    return True
