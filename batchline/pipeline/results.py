"""Streaming a batch's results into Redis, one subtask per custom_id, and recording each once."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson

from batchline import api, handlers, logs, memory
from batchline.chunking import line_custom_id, untag
from batchline.classify import MISSING, Outcome, classify_result, decide
from batchline.errors import BatchNotFound, RateLimited, RetryableApiError
from batchline.ingest import blob_header
from batchline.keys import JobKeys
from batchline.lease import Lease
from batchline.messaging.names import TaskName
from batchline.pipeline.context import Context, Defer
from batchline.pipeline.poll import block
from batchline.pipeline.terminal import after, deliver_hooks, finish_followers
from batchline.pricing import cost_nusd
from batchline.store import NO_USAGE, Chunk, Item, make_record
from batchline.wire import dumps, pack, pack_obj, unpack

FANOUT_SLICE = 1000


def fan_out_results(ctx: Context, job_id: str, number: int, batch_id: str) -> None:
    """Stream the results once, store each line once, publish one process_result per line."""
    store = ctx.store
    chunk = store.chunk(job_id, number)
    if chunk is None or chunk.state != "ended":
        return
    if chunk.fields.get("fanout_done") == "1":
        republish_unprocessed(ctx, chunk)
        return
    lease = ctx.lease(f"fanout:{chunk.ref}")
    if not lease.acquire():
        raise Defer(ctx.settings.lease_s / 2, "another worker is fanning out this batch")
    try:
        _fan_out(ctx, chunk, lease)
    except _Stop:
        pass  # the chunk is blocked; `batchline unblock` reads again
    finally:
        lease.release()


def _renew(lease: Lease) -> None:
    if not lease.renew():
        raise Defer(0, "fan-out lease lost; another worker resumes")


def _fan_out(ctx: Context, chunk: Chunk, lease: Lease) -> None:
    store = ctx.store
    _wait_for_memory(ctx, chunk)
    runs = chunk.number_field("fanout_runs") + 1
    store.touch_chunk(chunk.job_id, chunk.number, fanout_runs=runs, fanout_started_at=store.now())
    seen = ours = 0
    if chunk.fields.get("lost") != "resent":  # a batch given up has no results to read
        try:
            ctx.limiter.take("results")
        except RateLimited as exc:
            raise Defer(exc.retry_after_s or 1, str(exc)) from None
        # The whole stream every run: the API promises no order, so a run that resumes
        # cannot skip what an earlier run read; what is already stored or recorded is not
        # published again (see _publish).
        path = api.results_path(chunk.batch_id or "", chunk.fields.get("results_url"))
        tag = chunk.fields.get("tag", "")
        resumed = runs > 1
        buffer: list[tuple[str, bytes]] = []
        # The lease is renewed every slice, and at least three times per lease_s: results
        # that arrive slowly (a slow link) must not let it run out mid-stream.
        renew_every = ctx.settings.lease_s / 3
        renew_at = time.monotonic() + renew_every
        try:
            for line in api.results_lines(ctx.client, path):
                seen += 1
                cid = line_custom_id(line)
                api_id = untag(cid, tag)
                if api_id is None:
                    _unknown(chunk, cid)
                    continue
                ours += 1
                buffer.append((api_id, line))
                if len(buffer) >= FANOUT_SLICE:
                    _publish(ctx, chunk, buffer, resumed)
                    buffer = []
                    _renew(lease)
                    renew_at = time.monotonic() + renew_every
                    _wait_for_memory(ctx, chunk)
                elif time.monotonic() >= renew_at:
                    _renew(lease)
                    renew_at = time.monotonic() + renew_every
            _publish(ctx, chunk, buffer, resumed)
        except BatchNotFound as exc:
            block(ctx, chunk, "not_found", f"its results answer 404: {exc}")
            return
        except RetryableApiError as exc:
            logs.warning(
                "results.interrupted",
                job_id=chunk.job_id,
                batch_id=chunk.batch_id,
                lines=seen,
                error=str(exc),
            )
            _retry_or_block(ctx, chunk, runs, f"reading its results failed: {exc}")
        if ours < chunk.count:
            logs.warning(
                "results.short",
                job_id=chunk.job_id,
                batch_id=chunk.batch_id,
                lines=ours,
                expected=chunk.count,
            )
            _retry_or_block(ctx, chunk, runs, f"its results had {ours} of {chunk.count} lines")
    store.touch_chunk(
        chunk.job_id, chunk.number, fanout_done=1, results_seen=seen, fanout_done_at=store.now()
    )
    logs.event("results.fanned_out", job_id=chunk.job_id, batch_id=chunk.batch_id, lines=seen)
    _resolve_missing(ctx, chunk)


def _wait_for_memory(ctx: Context, chunk: Chunk) -> None:
    """Storing results fills Redis; recording them empties it. Near maxmemory the download
    waits (resuming later reads the stream again and skips what is stored), so the results
    already stored are recorded and Redis keeps room for its own bookkeeping."""
    m = memory.memory(ctx.store.r, ctx.settings.redis_memory_high_water)
    if m.high:
        logs.warning(
            "results.paused_for_memory",
            job_id=chunk.job_id,
            batch_id=chunk.batch_id,
            memory=m.describe(),
        )
        raise Defer(ctx.backoff_s(1), f"Redis memory high ({m.describe()}); results wait")


def _retry_or_block(ctx: Context, chunk: Chunk, runs: int, why: str) -> None:
    """Read again later, or after fanout_max_runs failed reads, block the chunk for an
    operator rather than send again requests whose results may exist. (Runs that ended
    because their worker stopped or died are not failures of the read.)"""
    meta = ctx.store.chunk_keys(chunk.job_id, chunk.number).meta
    failures = int(ctx.store.r.hincrby(meta, "fanout_failures", 1))
    if failures < ctx.settings.fanout_max_runs:
        raise Defer(ctx.backoff_s(failures), f"{why}; reading again")
    block(ctx, chunk, "results_unreadable", why)
    raise _Stop()


class _Stop(Exception):
    """Ends a fan-out run that blocked its chunk (caught in fan_out_results)."""


def _unknown(chunk: Chunk, cid: str) -> None:
    logs.warning(
        "results.unknown_custom_id",
        job_id=chunk.job_id,
        batch_id=chunk.batch_id,
        custom_id=cid[:80] or None,
    )


def _publish(ctx: Context, chunk: Chunk, buffer: list[tuple[str, bytes]], resumed: bool) -> None:
    """Store this slice's lines (first write wins) and publish their subtasks in one batch.

    A line already recorded is skipped. A line stored by an earlier run is published again
    only when this run resumes one that stopped (its message may have died with it): a
    second message for one result is a no-op (process_result finds it recorded).
    """
    if not buffer:
        return
    store = ctx.store
    keys = store.keys(chunk.job_id)
    ck = keys.chunk(chunk.number)
    pipe = store.r.pipeline(transaction=False)
    for cid, _ in buffer:
        pipe.sismember(ck.done, cid)
        pipe.hexists(keys.requests, cid)
    flags = pipe.execute()
    pipe = store.r.pipeline(transaction=False)
    candidates = []
    for i, (cid, line) in enumerate(buffer):
        if flags[2 * i]:
            continue  # recorded already
        if not flags[2 * i + 1]:
            _unknown(chunk, cid)
            continue
        pipe.hsetnx(ck.raw, cid, pack(line))
        candidates.append(cid)
    stored = pipe.execute()
    publish = [
        (chunk.job_id, chunk.number, chunk.batch_id, cid)
        for cid, new in zip(candidates, stored, strict=True)
        if new or resumed
    ]
    ctx.dispatch.send_many(TaskName.PROCESS_RESULT, publish)


def _resolve_missing(ctx: Context, chunk: Chunk) -> None:
    """Requests of the batch without a result line (lost batch, short stream) are retried."""
    store = ctx.store
    ck = store.keys(chunk.job_id).chunk(chunk.number)
    missing: list[str] = []
    for start in range(0, chunk.count, FANOUT_SLICE):
        ids = store.chunk_ids(chunk.job_id, chunk.number, start, start + FANOUT_SLICE - 1)
        pipe = store.r.pipeline(transaction=False)
        for cid in ids:
            pipe.sismember(ck.done, cid)
            pipe.hexists(ck.raw, cid)
        flags = pipe.execute()
        missing += [cid for i, cid in enumerate(ids) if not flags[2 * i] and not flags[2 * i + 1]]
    if missing:
        logs.warning(
            "results.missing", job_id=chunk.job_id, batch_id=chunk.batch_id, requests=len(missing)
        )
        for start in range(0, len(missing), FANOUT_SLICE):
            record_outcomes(
                ctx,
                chunk.job_id,
                chunk.number,
                {
                    cid: Outcome("retry", error=MISSING)
                    for cid in missing[start : start + FANOUT_SLICE]
                },
            )
    else:
        fin = ctx.store.finish(chunk.job_id, chunk.number, [])
        after(ctx, chunk.job_id, chunk.number, fin)


def republish_unprocessed(ctx: Context, chunk: Chunk) -> int:
    """Publish process_result again for stored results nobody processed (a lost subtask)."""
    ck = ctx.store.keys(chunk.job_id).chunk(chunk.number)
    ids = [k.decode() for k in ctx.store.r.hkeys(ck.raw)]
    ctx.dispatch.send_many(
        TaskName.PROCESS_RESULT,
        [(chunk.job_id, chunk.number, chunk.batch_id, cid) for cid in ids],
    )
    if not ids:
        _resolve_missing(ctx, chunk)
    return len(ids)


def process_result(ctx: Context, job_id: str, number: int, batch_id: str, api_id: str) -> None:
    """Classify one stored result and record its outcome exactly once."""
    store = ctx.store
    keys = store.keys(job_id)
    ck = keys.chunk(number)
    pipe = store.r.pipeline(transaction=False)
    pipe.hget(ck.raw, api_id)
    pipe.zscore(keys.hooks_pending, api_id)
    _queue_reads(pipe, keys, [api_id])  # what recording needs, in the same round trip
    raw, hook_pending, *reads = pipe.execute()
    if raw is None:
        if hook_pending is not None:
            deliver_hooks(ctx, job_id, [api_id])
        if handlers.redelivered(ctx, job_id, [api_id]):
            raise Defer(ctx.settings.handler_timeout_s / 4, "its handler call is claimed")
        return  # processed already (a redelivered subtask)
    line = orjson.loads(unpack(raw))
    outcome = {api_id: classify_result(line.get("result"))}
    record_outcomes(ctx, job_id, number, outcome, batch_id=batch_id, reads=reads)


ResultRef = tuple[str, int, str, str]  # a process_result message: job, chunk, batch, custom_id


def process_results(ctx: Context, refs: Sequence[ResultRef]) -> list[ResultRef]:
    """Classify and record a group of stored results: per chunk, one pipelined read, one
    FINISH, one hook publish. A result whose processing fails does not hold the others back:
    it is returned (to be retried), and so is every result of a chunk whose group failed in
    a way that processing them one by one could not get past."""
    by_chunk: dict[tuple[str, int], dict[str, ResultRef]] = {}
    for ref in refs:
        by_chunk.setdefault((ref[0], ref[1]), {}).setdefault(ref[3], ref)
    failed: list[ResultRef] = []
    for (job_id, number), group in by_chunk.items():
        try:
            failed += _process_group(ctx, job_id, number, group)
        except Exception as exc:
            if len(group) == 1:
                _note_failure(job_id, list(group.values()), exc)
                failed += group.values()
                continue
            # One result the group cannot carry: each one on its own finds it.
            for ref in group.values():
                try:
                    failed += _process_group(ctx, job_id, number, {ref[3]: ref})
                except Exception as one_exc:
                    _note_failure(job_id, [ref], one_exc)
                    failed.append(ref)
    return failed


def _note_failure(job_id: str, refs: list[ResultRef], exc: Exception) -> None:
    logs.event(
        "results.failed",
        logging.WARNING,
        job_id=job_id,
        results=len(refs),
        custom_id=refs[0][3] if len(refs) == 1 else None,
        error=f"{type(exc).__name__}: {exc}"[:300],
    )


def _process_group(
    ctx: Context, job_id: str, number: int, group: dict[str, ResultRef]
) -> list[ResultRef]:
    store = ctx.store
    keys = store.keys(job_id)
    ck = keys.chunk(number)
    ids = list(group)
    pipe = store.r.pipeline(transaction=False)
    pipe.hmget(ck.raw, ids)
    pipe.zmscore(keys.hooks_pending, ids)
    _queue_reads(pipe, keys, ids)  # what recording needs, in the same round trip
    raws, pending, canceled, retried, originals, blobs = pipe.execute()
    hooks_due = [
        a for a, raw, p in zip(ids, raws, pending, strict=True) if raw is None and p is not None
    ]
    if hooks_due:
        deliver_hooks(ctx, job_id, hooks_due)  # processed already (a redelivered subtask)
    # Recorded already: a handler call its worker never ended is made now; one another
    # worker holds is tried again later (returned as failed).
    recorded = [a for a, raw in zip(ids, raws, strict=True) if raw is None]
    failed: list[ResultRef] = [group[a] for a in handlers.redelivered(ctx, job_id, recorded)]
    outcomes: dict[str, Outcome] = {}
    keep: list[int] = []
    for i, (api_id, raw) in enumerate(zip(ids, raws, strict=True)):
        if raw is None:
            continue
        try:
            line = orjson.loads(unpack(raw))
            outcomes[api_id] = classify_result(line.get("result"))
        except Exception as exc:
            _note_failure(job_id, [group[api_id]], exc)
            failed.append(group[api_id])
            continue
        keep.append(i)
    if outcomes:
        reads = [
            canceled,
            [retried[i] for i in keep],
            [originals[i] for i in keep],
            [blobs[i] for i in keep],
        ]
        batch_id = group[ids[keep[0]]][2]
        record_outcomes(ctx, job_id, number, outcomes, batch_id=batch_id, reads=reads)
    return failed


def _queue_reads(pipe: Any, keys: JobKeys, ids: list[str]) -> None:
    pipe.hget(keys.job, "cancel_requested")
    pipe.hmget(keys.retries, ids)
    pipe.hmget(keys.original_ids, ids)
    pipe.hmget(keys.requests, ids)


def record_outcomes(
    ctx: Context,
    job_id: str,
    number: int | str,
    outcomes: dict[str, Outcome],
    batch_id: str | None = None,
    reads: list[Any] | None = None,
) -> None:
    """Apply retry limits and the job's state to outcomes, record them, send hooks."""
    store = ctx.store
    keys = store.keys(job_id)
    opts = store.options(job_id)
    ids = list(outcomes)
    if reads is None:
        pipe = store.r.pipeline(transaction=False)
        _queue_reads(pipe, keys, ids)
        reads = pipe.execute()
    canceled_flag, retried, originals, blobs = reads
    canceled = canceled_flag == b"1"
    items: list[Item] = []
    records: dict[str, dict[str, Any]] = {}
    params_keys: dict[str, str] = {}
    for i, api_id in enumerate(ids):
        attempts = 1 + int(retried[i] or 0)
        outcome = decide(
            outcomes[api_id],
            attempts=attempts,
            max_attempts=opts.max_attempts,
            job_canceled=canceled,
        )
        if outcome.kind == "retry":
            items.append(Item(api_id, "retry", dumps(outcome.error)))
            continue
        line, params_keys[api_id] = blob_header(blobs[i]) if blobs[i] else (None, "")
        custom_id = originals[i].decode() if originals[i] else api_id
        rec = make_record(custom_id, outcome.kind, attempts, line, outcome.message, outcome.error)
        records[api_id] = rec
        items.append(
            Item(
                api_id,
                outcome.kind,
                pack_obj(rec),
                hook=bool(opts.on_result),
                usage=_usage(ctx, outcome),
                detail=_detail(ctx, outcome),
            )
        )
    fin = ctx.store.finish(job_id, number, items)
    fresh = {a: r for a, r in records.items() if a in fin.fresh}
    level = logging.INFO if ctx.settings.result_logs else logging.DEBUG
    for rec in fresh.values():
        logs.event(
            f"request.{rec['state']}",
            level,
            job_id=job_id,
            batch_id=batch_id,
            custom_id=rec["custom_id"],
            attempts=rec["attempts"],
        )
        if opts.result_events and rec["state"] in ("succeeded", "failed"):
            ctx.emit(
                job_id,
                f"result.{rec['state']}",
                custom_id=rec["custom_id"],
                attempts=rec["attempts"],
                error=rec.get("error"),
                batch_id=batch_id,
            )
    if opts.on_result:
        deliver_hooks(ctx, job_id, list(fresh), fresh)
    if opts.cache:
        remember(ctx, opts.cache_scope, fresh, params_keys)
        finish_followers(ctx, job_id, fresh)
    if fresh and (opts.handler or ctx.settings.result_handler):
        _run_handlers(ctx, job_id, fresh)
    if fresh:
        progress(ctx, job_id)
    after(ctx, job_id, number, fin)


def _run_handlers(ctx: Context, job_id: str, fresh: dict[str, dict[str, Any]]) -> None:
    """The job's in-process handler (batchline.handlers), once per group, for the records
    this group newly recorded."""
    from batchline.handlers import run_handlers

    run_handlers(ctx, job_id, [(rec["custom_id"], rec) for rec in fresh.values()])


def remember(
    ctx: Context, scope: str, records: dict[str, dict[str, Any]], params_keys: dict[str, str]
) -> None:
    """Put succeeded answers in the result cache, so the same request is not paid twice."""
    pipe = ctx.store.r.pipeline(transaction=False)
    for api_id, rec in records.items():
        if rec["state"] == "succeeded" and params_keys.get(api_id):
            key = ctx.store.fleet.result_cache(scope, params_keys[api_id])
            pipe.set(key, pack_obj(rec["message"]), ex=ctx.settings.cache_ttl_s)
    pipe.execute()


_last_progress: dict[str, float] = {}


def progress(ctx: Context, job_id: str) -> None:
    """A job.progress event, at most once per progress_event_interval_s per job (checked in
    this process first, so most results cost no round trip for it)."""
    interval_s = ctx.settings.progress_event_interval_s
    now = time.monotonic()
    if interval_s and now - _last_progress.get(job_id, -interval_s) < interval_s:
        return
    if len(_last_progress) > 1000:
        _last_progress.clear()
    _last_progress[job_id] = now
    lock = ctx.store.fleet.lease(f"progress:{job_id}")
    if interval_s and not ctx.store.r.set(lock, "1", nx=True, px=int(interval_s * 1000)):
        return
    f = ctx.store.job_fields(job_id)
    counts = {
        k: int(f.get(k) or 0) for k in ("total", "succeeded", "failed", "canceled", "rejected")
    }
    ctx.emit(job_id, "job.progress", counts=counts)


def _detail(ctx: Context, outcome: Outcome) -> str:
    """What the fleet's counters file an outcome under: a failure's error type; a success's
    model as the price table names it (its cost is counted under that name; "" for a model
    without a price, whose cost is 0)."""
    if outcome.kind == "failed":
        return outcome.error["type"] if outcome.error else ""
    if outcome.kind != "succeeded" or not outcome.message:
        return ""
    model = str(outcome.message.get("model") or "")
    return max((p for p in ctx.settings.prices if model.startswith(p)), key=len, default="")


def _usage(ctx: Context, outcome: Outcome) -> tuple[int, int, int, int, int]:
    if outcome.kind != "succeeded" or not outcome.message:
        return NO_USAGE
    u = outcome.message.get("usage") or {}
    model = str(outcome.message.get("model") or "")
    return (
        int(u.get("input_tokens") or 0),
        int(u.get("output_tokens") or 0),
        int(u.get("cache_creation_input_tokens") or 0),
        int(u.get("cache_read_input_tokens") or 0),
        cost_nusd(ctx.settings, model, u),
    )
