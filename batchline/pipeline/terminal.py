"""Recording terminal states (once per custom_id), sending on_result hooks, closing chunks."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from batchline import logs
from batchline.ingest import blob_header
from batchline.pipeline.context import Context
from batchline.pipeline.status import status
from batchline.store import Chunk
from batchline.wire import ErrorInfo, pack_obj, unpack_obj

COMPLETE_HOOK = "!complete"  # the on_complete hook's mark among the per-custom_id marks
HOOK_NAMESPACE = uuid.UUID("6f0b8a52-4c1e-4f37-9a57-0d1f3c1b7e21")
NO_USAGE = (0, 0, 0, 0, 0)
SLICE = 1000


def hook_task_id(job_id: str, api_id: str, kind: str) -> str:
    """A stable task id per hook call, so a receiver can recognise a repeat."""
    return str(uuid.uuid5(HOOK_NAMESPACE, f"{job_id}/{api_id}/{kind}"))


def make_record(
    custom_id: str,
    state: str,
    attempts: int,
    line: int | None,
    message: dict[str, Any] | None = None,
    error: ErrorInfo | None = None,
) -> dict[str, Any]:
    rec: dict[str, Any] = {"custom_id": custom_id, "state": state, "attempts": attempts}
    if message is not None:
        rec["message"] = message
    if error is not None:
        rec["error"] = dict(error)
    if line is not None:
        rec["line"] = line
    return rec


@dataclass(frozen=True, slots=True)
class Item:
    """One request's outcome for the FINISH script."""

    api_id: str
    kind: str  # succeeded | failed | canceled | retry
    blob: bytes  # the packed record, or the last error (JSON) for a retry
    hook: bool = False
    usage: tuple[int, int, int, int, int] = NO_USAGE


@dataclass(frozen=True)
class Finished:
    processed: int
    count: int
    remaining: int
    fresh: frozenset[str]


def finish(ctx: Context, job_id: str, number: int | str, items: Sequence[Item]) -> Finished:
    """Record outcomes atomically; an id already recorded for this chunk is skipped."""
    keys = ctx.store.keys(job_id)
    ck = keys.chunk(number)
    args: list[Any] = [len(items), ctx.store.now()]
    for it in items:
        args += [it.api_id, it.kind, it.blob, "1" if it.hook else "0", *it.usage]
    res = ctx.store.scripts.finish(
        keys=[
            keys.job,
            ck.meta,
            ck.done,
            ck.raw,
            keys.records,
            ck.retry,
            keys.hooks_pending,
            keys.last_errors,
            keys.requests,
            ctx.store.fleet.stats,
        ],
        args=args,
    )
    fresh = frozenset(x.decode() if isinstance(x, bytes) else str(x) for x in res[3:])
    return Finished(int(res[0]), int(res[1]), int(res[2]), fresh)


def deliver_hooks(
    ctx: Context,
    job_id: str,
    marks: Sequence[str],
    records: dict[str, dict[str, Any]] | None = None,
) -> int:
    """Send the hooks behind these marks, each by exactly one worker.

    A mark (an api custom_id, or COMPLETE_HOOK) is claimed by moving it from the pending set
    to the sending set; only the worker whose move succeeded sends, then drops the mark. A
    worker that dies after claiming leaves the mark in the sending set for the sweeper.
    """
    if not marks:
        return 0
    store = ctx.store
    keys = store.keys(job_id)
    claimed = [
        m.decode() if isinstance(m, bytes) else m
        for m in store.scripts.claim_hooks(
            keys=[keys.hooks_pending, keys.hooks_sending], args=[store.now(), *marks]
        )
    ]
    if not claimed:
        return 0
    opts = store.options(job_id)
    records = dict(records or {})
    need = [m for m in claimed if m != COMPLETE_HOOK and m not in records]
    if need:
        blobs = store.r.hmget(keys.records, need)
        records.update({m: unpack_obj(b) for m, b in zip(need, blobs, strict=True) if b})  # type: ignore[arg-type]
    for m in claimed:
        if m == COMPLETE_HOOK:
            if opts.on_complete:
                summary = status(store, job_id, with_batches=False)
                ctx.dispatch.send_hook(
                    opts.on_complete,
                    (job_id, summary),
                    hook_task_id(job_id, m, "on_complete"),
                    opts.hook_queue,
                )
        elif opts.on_result and m in records:
            rec = records[m]
            ctx.dispatch.send_hook(
                opts.on_result,
                (job_id, rec["custom_id"], rec),
                hook_task_id(job_id, m, "on_result"),
                opts.hook_queue,
            )
    store.r.zrem(keys.hooks_sending, *claimed)
    return len(claimed)


def after(ctx: Context, job_id: str, number: int | str, fin: Finished) -> None:
    """Schedule what recorded outcomes make due: retry planning, job completion."""
    if isinstance(number, int) and fin.count and fin.processed >= fin.count:
        ctx.dispatch.send("batchline.plan_retries", (job_id, number))
    if fin.remaining <= 0:
        ctx.dispatch.send("batchline.finalize_job", (job_id,))


def request_lines(ctx: Context, job_id: str, api_ids: Sequence[str]) -> dict[str, int]:
    """Input line of each request still stored."""
    blobs = ctx.store.r.hmget(ctx.store.keys(job_id).requests, list(api_ids))
    return {a: blob_header(b)[0] for a, b in zip(api_ids, blobs, strict=True) if b}  # type: ignore[arg-type]


def close_chunk(
    ctx: Context, chunk: Chunk, state: str, error: ErrorInfo, from_states: tuple[str, ...]
) -> None:
    """End every request of a chunk that never ran (create failed, job canceled) as `state`."""
    store = ctx.store
    job_id = chunk.job_id
    opts = store.options(job_id)
    retries_key = store.keys(job_id).retries
    remaining = 1
    for start in range(0, chunk.count, SLICE):
        ids = store.chunk_ids(job_id, chunk.number, start, start + SLICE - 1)
        if not ids:
            break
        originals = store.original_ids(job_id, ids)
        lines = request_lines(ctx, job_id, ids)
        retries = store.r.hmget(retries_key, ids)
        records: dict[str, dict[str, Any]] = {}
        items = []
        for api_id, retried in zip(ids, retries, strict=True):  # type: ignore[arg-type]
            rec = make_record(
                originals.get(api_id, api_id),
                state,
                1 + int(retried or 0),
                lines.get(api_id),
                error=error,
            )
            records[api_id] = rec
            items.append(Item(api_id, state, pack_obj(rec), hook=bool(opts.on_result)))
        fin = finish(ctx, job_id, chunk.number, items)
        fresh = {a: r for a, r in records.items() if a in fin.fresh}
        if opts.on_result:
            deliver_hooks(ctx, job_id, list(fresh), fresh)
        remaining = fin.remaining
    store.transition(job_id, chunk.number, from_states, state, close=True)
    ctx.limiter.release(chunk.ref)
    logs.event(
        f"chunk.{state}",
        job_id=job_id,
        chunk=chunk.number,
        requests=chunk.count,
        reason=error["message"],
    )
    if remaining <= 0:
        ctx.dispatch.send("batchline.finalize_job", (job_id,))
