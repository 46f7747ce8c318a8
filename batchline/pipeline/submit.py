"""Submitting a job: validate every line, store each request once, cut chunks, start creates."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import uuid
from collections.abc import Iterator
from typing import Any

import redis

from batchline import memory
from batchline import scripts as lua
from batchline.errors import JobConflict, JobRefused
from batchline.formats import MissingExtra, detect_format, read_items, read_path
from batchline.ingest import Ingest, fingerprint, job_fields, refuse
from batchline.keys import upload_key
from batchline.lease import Lease
from batchline.messaging.names import TaskName
from batchline.metrics import refusals_counted
from batchline.pipeline.context import Context, Defer
from batchline.pipeline.terminal import deliver_hooks
from batchline.sources import (
    Item,
    UploadStream,
    decompress,
    fingerprint_objects,
    iter_objects,
    resolve_source,
)
from batchline.store import JobOptions
from batchline.wire import SubmitResult, dumps

JOB_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
READ_BLOCK = 1024 * 1024
DIGEST_SEGMENTS = 4


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex[:20]}"


class Input:
    """A job's input, readable twice: once to fingerprint it, once to ingest it."""

    def __init__(
        self,
        ctx: Context,
        requests: Any,
        source: str | None,
        upload: str | None,
        fmt: str | None = None,
    ):
        given = [x is not None for x in (requests, source, upload)]
        if sum(given) != 1:
            raise JobRefused("give exactly one of requests, source or upload")
        self.ctx = ctx
        self.requests = requests
        self.path = resolve_source(source, ctx.settings.source_dir) if source else None
        self.upload = upload_key(ctx.settings.key_prefix, upload) if upload else None
        if self.upload and not ctx.store.r.exists(self.upload):
            raise JobRefused(f"upload {upload!r} not found (expired or already used)")
        # A source's format comes from its extension unless given; an upload's is given.
        self.format = detect_format(self.path.name if self.path else None, fmt)

    def digest(self) -> str:
        """sha256 of the input's bytes (the same for a file and its upload)."""
        if self.requests is not None:
            return fingerprint_objects(self.requests)
        sha = hashlib.sha256()
        if self.path is not None:
            with open(self.path, "rb") as f:
                while block := f.read(READ_BLOCK):
                    sha.update(block)
        else:  # a few segments at a time: an upload may be larger than the worker's memory
            r = self.ctx.store.r
            for start in range(0, int(r.llen(self.upload)), DIGEST_SEGMENTS):
                for segment in r.lrange(self.upload, start, start + DIGEST_SEGMENTS - 1):
                    sha.update(decompress(segment))
        return sha.hexdigest()

    def stored_bytes(self) -> int:
        """About what the job's requests take in Redis once stored (see memory.job_needs)."""
        if self.upload is not None:
            uploaded = int(self.ctx.store.r.memory_usage(self.upload) or 0)
        elif self.path is not None:
            uploaded = self.path.stat().st_size // 3  # compressed, about
        else:
            uploaded = len(dumps(self.requests)) // 3
        return memory.job_needs(uploaded)

    def items(self) -> Iterator[tuple[int, Item]]:
        limit = self.ctx.settings.max_request_bytes
        try:
            if self.requests is not None:
                yield from iter_objects(self.requests)
            elif self.path is not None:
                yield from read_path(self.path, self.format, limit)
            else:
                assert self.upload is not None
                stream = UploadStream(self.ctx.store.r, self.upload)
                yield from read_items(stream, self.format, limit)  # type: ignore[arg-type]
        except MissingExtra as exc:
            raise JobRefused(f"{exc} (on the workers)") from None


def _existing(ctx: Context, job_id: str) -> SubmitResult:
    """The job as an earlier submit left it. A submit that died after storing the job but
    before starting its creates is finished here: chunks still pending are queued again
    (each create is idempotent, and a chunk enters the admission line once)."""
    store = ctx.store
    f = store.job_fields(job_id)
    if f.get("state") in ("pending", "running", "canceling") and not f.get("started"):
        _start(
            ctx, job_id, {c.number: c.count for c in store.chunks(job_id) if c.state == "pending"}
        )
    return SubmitResult(
        job_id=job_id, accepted=int(f.get("accepted", 0)), rejected=[], existing=True
    )


def _start(ctx: Context, job_id: str, sizes: dict[int, int]) -> None:
    """Queue the creates of a stored job's chunks (number -> requests, in order), then note
    that they were queued."""
    numbers = list(sizes)
    ctx.limiter.enqueue((f"{job_id}:{n}", count) for n, count in sizes.items())
    for n in numbers:
        ctx.dispatch.send(TaskName.CREATE_BATCH, (job_id, n))
    if not numbers:  # nothing to send: every request rejected or from the cache
        ctx.dispatch.send(TaskName.FINALIZE_JOB, (job_id,))
    ctx.store.r.hset(ctx.store.keys(job_id).job, "started", 1)


@refusals_counted
def submit(
    ctx: Context,
    *,
    job_id: str | None,
    options: JobOptions,
    requests: Any = None,
    source: str | None = None,
    upload: str | None = None,
) -> SubmitResult:
    """Validate and store a job, then start its creates; the same job_id twice is one job."""
    options = options.resolved(ctx.settings)  # the workers' own defaults, applied here only
    store = ctx.store
    job_id = job_id or new_job_id()
    if not isinstance(job_id, str) or not JOB_ID.match(job_id):
        raise JobRefused("job_id must be 1-128 characters of letters, digits, . _ : -")
    if options.max_attempts < 1:
        raise JobRefused("max_attempts must be at least 1")
    data = Input(ctx, requests, source, upload, options.format)
    if options.format is None and data.format != "jsonl":  # a source's extension said it
        options = dataclasses.replace(options, format=data.format)
    # Which Redis server answers, noted before any chunk is made: a chunk made before a
    # server was first seen is looked for before it is created (see durability).
    store.server_since()
    fp = fingerprint(options, data.digest())
    if store.job_state(job_id) is None:  # a new job: refused now if it would not fit
        memory.check_room(
            store.r, ctx.settings.redis_memory_high_water, data.stored_bytes(), "this job"
        )
    keys = store.keys(job_id)
    lease = ctx.lease(f"ingest:{job_id}")
    try:
        claimed = lua.CLAIM_JOB(store.r, lua.JobKey(keys.job), lua.ClaimJobArgs(fp, store.now()))
    except redis.exceptions.OutOfMemoryError as exc:
        raise memory.refusal(exc, "this job") from None
    state, old_fp = (v.decode() if isinstance(v, bytes) else v for v in claimed)
    if state != "new":
        if old_fp != fp:
            raise JobConflict(f"job {job_id!r} exists with different content")
        if state != "ingesting":
            if data.upload:  # a resubmit's own upload: nobody reads it again
                store.r.delete(data.upload)
            return _existing(ctx, job_id)
        if not lease.acquire():
            raise Defer(ctx.settings.lease_s / 2, f"job {job_id} is being ingested elsewhere")
        # A worker died mid-ingest: start over from a clean slate (the job stays claimed).
        store.delete_job(job_id, keep_claim=True)
    elif not lease.acquire():
        raise Defer(ctx.settings.lease_s / 2, f"job {job_id} is being ingested elsewhere")
    try:
        return _ingest(ctx, job_id, options, data, lease)
    except redis.exceptions.OutOfMemoryError as exc:
        store.delete_job(job_id)
        raise memory.refusal(exc, "this job's requests") from None
    finally:
        lease.release()


def _ingest(
    ctx: Context, job_id: str, options: JobOptions, data: Input, lease: Lease
) -> SubmitResult:
    store, r = ctx.store, ctx.store.r
    ingest = Ingest(store, job_id, options, on_flush=lease.renew)
    try:
        result = ingest.run(data.items())
    except JobRefused as exc:  # an input unreadable past some point: nothing stays
        raise refuse(store, job_id, ingest, str(exc)) from None
    if result.accepted == 0 and result.rejected_count == 0:
        raise refuse(store, job_id, ingest, "the input has no requests")
    if result.rejected_count and not options.accept_invalid:
        raise refuse(
            store,
            job_id,
            ingest,
            f"{result.rejected_count} invalid {'row' if options.table else 'line'}(s), "
            "nothing was sent",
            result.rejected,
        )
    if options.max_cost_usd is not None and result.estimated_cost_usd > options.max_cost_usd:
        raise refuse(
            store,
            job_id,
            ingest,
            f"estimated cost ${result.estimated_cost_usd:.4f} exceeds the budget "
            f"max_cost_usd=${options.max_cost_usd:.4f}; nothing was sent",
        )
    if result.rejected:
        ingest.rejected_records()
    now = store.now()
    keys = store.keys(job_id)
    pipe = r.pipeline(transaction=False)
    pipe.hset(keys.job, mapping=job_fields(options, result, now))
    pipe.zadd(store.fleet.jobs, {job_id: now})
    pipe.sadd(store.fleet.active_jobs, job_id)
    pipe.hincrby(store.fleet.stats, "jobs:submitted", 1)
    pipe.hincrby(store.fleet.stats, "requests:rejected", result.rejected_count)
    if result.cache_hits:
        pipe.hincrby(store.fleet.stats, "requests:succeeded", result.cache_hits)
        pipe.hincrby(store.fleet.stats, "requests:cache_hits", result.cache_hits)
    if result.hook_marks:
        now_s = store.now()
        pipe.zadd(keys.hooks_pending, {m: now_s for m in result.hook_marks})
    if data.upload:
        pipe.delete(data.upload)
    pipe.execute()
    ctx.record(
        job_id,
        "job.created",
        accepted=result.accepted,
        rejected=result.rejected_count,
        log={"chunks": result.chunks},
        event={
            "batches": result.chunks,
            "cache_hits": result.cache_hits,
            "deduplicated": result.deduplicated,
            "metadata": options.metadata,
        },
    )
    if result.hook_marks:
        deliver_hooks(ctx, job_id, result.hook_marks)
    _start(ctx, job_id, {n: ingest.chunk_sizes[n][0] for n in ingest.chunk_numbers})
    return SubmitResult(
        job_id=job_id,
        accepted=result.accepted,
        rejected=[e.as_dict() for e in result.rejected],
        existing=False,
    )
