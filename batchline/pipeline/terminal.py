"""Recording terminal states (once per custom_id), sending on_result hooks, closing chunks."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from batchline import logs
from batchline import scripts as lua
from batchline.handlers import run_handlers
from batchline.ingest import blob_header
from batchline.messaging.names import TaskName
from batchline.pipeline.context import Context
from batchline.pipeline.status import status
from batchline.pricing import cost_nusd
from batchline.store import Chunk, Finished, Item, make_record
from batchline.wire import ErrorInfo, pack_obj, unpack_obj

COMPLETE_HOOK = "!complete"  # the on_complete hook's mark among the per-custom_id marks
HOOK_NAMESPACE = uuid.UUID("6f0b8a52-4c1e-4f37-9a57-0d1f3c1b7e21")
SLICE = 1000


def hook_task_id(job_id: str, api_id: str, kind: str) -> str:
    """A stable task id per hook call, so a receiver can recognise a repeat."""
    return str(uuid.uuid5(HOOK_NAMESPACE, f"{job_id}/{api_id}/{kind}"))


def deliver_hooks(
    ctx: Context,
    job_id: str,
    marks: Sequence[str],
    records: dict[str, dict[str, Any]] | None = None,
) -> int:
    """Send the hooks behind these marks, each by exactly one worker.

    A mark (an api custom_id, or COMPLETE_HOOK) is claimed by moving it from the pending set
    to the sending set; only the worker whose move succeeded sends, and the send drops the
    mark in the same Redis transaction. A worker that dies after claiming and before sending
    leaves the mark in the sending set, and the sweeper sends it.
    """
    if not marks:
        return 0
    store = ctx.store
    keys = store.keys(job_id)
    claimed = [
        m.decode() if isinstance(m, bytes) else m
        for m in lua.CLAIM_HOOKS(
            store.r,
            lua.HookSets(keys.hooks_pending, keys.hooks_sending),
            lua.NowArg(store.now()),
            marks,
        )
    ]
    if not claimed:
        return 0
    opts = store.options(job_id)
    records = dict(records or {})
    need = [m for m in claimed if m != COMPLETE_HOOK and m not in records]
    if need:
        blobs = store.r.hmget(keys.records, need)
        records.update({m: unpack_obj(b) for m, b in zip(need, blobs, strict=True) if b})
    hooks: list[tuple[str, tuple[Any, ...], str, str | None]] = []
    for m in claimed:
        if m == COMPLETE_HOOK:
            if opts.on_complete:
                summary = status(store, job_id, with_batches=False)
                task_id = hook_task_id(job_id, m, "on_complete")
                hooks.append((opts.on_complete, (job_id, summary), task_id, opts.hook_queue))
        elif opts.on_result and m in records:
            rec = records[m]
            task_id = hook_task_id(job_id, m, "on_result")
            hooks.append(
                (opts.on_result, (job_id, rec["custom_id"], rec), task_id, opts.hook_queue)
            )
    # The messages go out and the marks are dropped together.
    ctx.dispatch.send_hooks(hooks, lambda pipe: pipe.zrem(keys.hooks_sending, *claimed))
    return len(claimed)


def finish_followers(ctx: Context, job_id: str, leaders: dict[str, dict[str, Any]]) -> None:
    """Give repeats of a request the terminal state their leader just reached."""
    store = ctx.store
    keys = store.keys(job_id)
    opts = store.options(job_id)
    if not opts.cache or not leaders:
        return
    lists = store.r.hmget(keys.followers, list(leaders))
    pairs = [
        (leader, f)
        for leader, raw in zip(leaders, lists, strict=True)
        if raw
        for f in raw.decode().split(",")
        if f
    ]
    for start in range(0, len(pairs), SLICE):
        part = pairs[start : start + SLICE]
        ids = [f for _, f in part]
        originals = store.original_ids(job_id, ids)
        lines = request_lines(ctx, job_id, ids)
        records: dict[str, dict[str, Any]] = {}
        saved = 0
        for leader, f in part:
            lead = leaders[leader]
            rec = {**lead, "custom_id": originals.get(f, f), "duplicate_of": lead["custom_id"]}
            rec.pop("line", None)
            if f in lines:
                rec["line"] = lines[f]
            records[f] = rec
            if rec["state"] == "succeeded":
                saved += _cost(ctx, rec)
        items = [
            Item(f, r["state"], pack_obj(r), hook=bool(opts.on_result), detail=_failure(r))
            for f, r in records.items()
        ]
        fin = store.finish(job_id, "dups", items)
        fresh = {f: r for f, r in records.items() if f in fin.fresh}
        if saved and fresh:
            store.r.hincrby(keys.job, "saved_nusd", saved)
        if opts.on_result:
            deliver_hooks(ctx, job_id, list(fresh), fresh)
        run_handlers(ctx, job_id, [(r["custom_id"], r) for r in fresh.values()])
        after(ctx, job_id, "dups", fin)


def _failure(rec: dict[str, Any]) -> str:
    """A failed record's error type, which the fleet's counters file it under."""
    return str((rec.get("error") or {}).get("type") or "") if rec["state"] == "failed" else ""


def _cost(ctx: Context, rec: dict[str, Any]) -> int:
    message = rec.get("message") or {}
    return cost_nusd(ctx.settings, str(message.get("model") or ""), message.get("usage") or {})


def after(ctx: Context, job_id: str, number: int | str, fin: Finished) -> None:
    """Schedule what recorded outcomes make due: retry planning, job completion."""
    if isinstance(number, int) and fin.count and fin.processed >= fin.count:
        ctx.dispatch.send(TaskName.PLAN_RETRIES, (job_id, number))
    if fin.remaining <= 0:
        ctx.dispatch.send(TaskName.FINALIZE_JOB, (job_id,))


def request_lines(ctx: Context, job_id: str, api_ids: Sequence[str]) -> dict[str, int]:
    """Input line of each request still stored."""
    blobs = ctx.store.r.hmget(ctx.store.keys(job_id).requests, list(api_ids))
    return {a: blob_header(b)[0] for a, b in zip(api_ids, blobs, strict=True) if b}


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
        for api_id, retried in zip(ids, retries, strict=True):
            rec = make_record(
                originals.get(api_id, api_id),
                state,
                1 + int(retried or 0),
                lines.get(api_id),
                error=error,
            )
            records[api_id] = rec
            items.append(
                Item(api_id, state, pack_obj(rec), hook=bool(opts.on_result), detail=_failure(rec))
            )
        fin = ctx.store.finish(job_id, chunk.number, items)
        fresh = {a: r for a, r in records.items() if a in fin.fresh}
        if opts.on_result:
            deliver_hooks(ctx, job_id, list(fresh), fresh)
        run_handlers(ctx, job_id, [(r["custom_id"], r) for r in fresh.values()])
        finish_followers(ctx, job_id, fresh)
        remaining = fin.remaining
    store.transition(job_id, chunk.number, from_states, state, close=True)
    ctx.limiter.release(chunk.ref)
    logs.event(
        f"chunk.{state}",
        job_id=job_id,
        chunk=chunk.number,
        batch_id=chunk.batch_id,
        requests=chunk.count,
        reason=error["message"],
    )
    if remaining <= 0:
        ctx.dispatch.send(TaskName.FINALIZE_JOB, (job_id,))
