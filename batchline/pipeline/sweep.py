"""The periodic sweep: re-arms whatever went quiet (a lost poll, create, fan-out, plan or hook)."""

from __future__ import annotations

from collections import Counter

from batchline import logs
from batchline import scripts as lua
from batchline.messaging.names import TaskName
from batchline.pipeline.context import Context
from batchline.pipeline.jobs import emit_final, release
from batchline.pipeline.retries import flush_pool
from batchline.pipeline.terminal import deliver_hooks
from batchline.store import FINAL_JOB_STATES, Chunk, ChunkState


def sweep(ctx: Context) -> dict[str, int]:
    """One pass over active jobs; at most one pass runs at a time across the fleet."""
    store = ctx.store
    s = ctx.settings
    lock_s = max(1, int(s.sweep_interval_s * 0.8))
    if not store.r.set(store.fleet.lease("sweep"), "1", nx=True, ex=lock_s):
        return {}
    done: Counter[str] = Counter()
    now = store.now()
    store.r.set(store.fleet.last_sweep, now)
    for raw in store.r.smembers(store.fleet.active_jobs):
        job_id = raw.decode()
        state = store.job_state(job_id)
        if state is None:
            store.r.srem(store.fleet.active_jobs, job_id)
            continue
        if state == "ingesting":
            continue
        if state in FINAL_JOB_STATES:
            # Kept active until its final event is written and its hooks are sent.
            done["hooks"] += _stale_hooks(ctx, job_id)
            if emit_final(ctx, job_id):
                done["final_event"] += 1
                logs.warning("sweep.final_event_written", job_id=job_id, state=state)
            release(ctx, job_id)
            continue
        for chunk in store.chunks(job_id):
            action = _rearm(ctx, chunk, now)
            if action:
                done[action] += 1
                logs.warning(
                    "sweep.rearmed",
                    job_id=job_id,
                    chunk=chunk.number,
                    batch_id=chunk.batch_id,
                    action=action,
                    state=chunk.state,
                )
        done.update(_job_level(ctx, job_id))
    return dict(done)


def _quiet(chunk: Chunk, now: float, stall_s: float) -> bool:
    last = max(
        chunk.time_field(name) for name in ("touched_at", "due_at", "polled_at", "progress_at")
    )
    return now - last > stall_s


def _rearm(ctx: Context, chunk: Chunk, now: float) -> str | None:
    store = ctx.store
    if chunk.state == ChunkState.BLOCKED:
        return _recheck(ctx, chunk, now)
    if not _quiet(chunk, now, ctx.settings.stall_s):
        return None
    job_id, n = chunk.job_id, chunk.number
    if chunk.state == ChunkState.PENDING or (
        chunk.state == ChunkState.CREATING and not ctx.lease(f"create:{chunk.ref}").held()
    ):
        store.touch_chunk(job_id, n)
        ctx.dispatch.send(TaskName.CREATE_BATCH, (job_id, n))
        return "create"
    if chunk.state == ChunkState.IN_PROGRESS and chunk.batch_id:
        gen = int(store.r.hincrby(store.chunk_keys(job_id, n).meta, "poll_gen", 1))
        store.touch_chunk(job_id, n, polled_at=now)
        ctx.dispatch.send(TaskName.POLL_BATCH, (job_id, n, chunk.batch_id, gen))
        return "poll"
    if chunk.state == ChunkState.ENDED:
        if chunk.number_field("processed") >= chunk.count:
            store.touch_chunk(job_id, n)
            ctx.dispatch.send(TaskName.PLAN_RETRIES, (job_id, n))
            return "plan"
        if chunk.fields.get("fanout_done") != "1":
            if ctx.lease(f"fanout:{chunk.ref}").held():
                return None  # a live fan-out renews its lease
            store.touch_chunk(job_id, n)
            ctx.dispatch.send(TaskName.FAN_OUT_RESULTS, (job_id, n, chunk.batch_id))
            return "fan_out"
        # Every subtask was published; the broker redelivers a dead worker's unacked ones
        # after visibility_timeout_s. Results still unprocessed well after that were lost
        # (Redis lost data, or a results worker without ack emulation died holding them):
        # publish them again.
        lost_after = ctx.settings.visibility_timeout_s + ctx.settings.stall_s
        if now - max(chunk.time_field("progress_at"), chunk.time_field("touched_at")) > lost_after:
            store.touch_chunk(job_id, n)
            ctx.dispatch.send(TaskName.FAN_OUT_RESULTS, (job_id, n, chunk.batch_id))
            return "republish"
    return None


def _recheck(ctx: Context, chunk: Chunk, now: float) -> str | None:
    """Look again, now and then, for a batch that answered 404 or ran past its expiry: a key
    swapped back to its workspace brings every such batch back. Unreadable results wait for
    an operator (`batchline unblock`)."""
    if chunk.fields.get("blocked_reason") not in ("not_found", "overdue"):
        return None
    if now - chunk.time_field("blocked_checked_at") < ctx.settings.blocked_recheck_s:
        return None
    ctx.store.touch_chunk(chunk.job_id, chunk.number, blocked_checked_at=now)
    ctx.dispatch.send(TaskName.UNBLOCK_CHUNK, (chunk.job_id, chunk.number, False))
    return "recheck"


def _job_level(ctx: Context, job_id: str) -> Counter[str]:
    store = ctx.store
    keys = store.keys(job_id)
    out: Counter[str] = Counter()
    f = store.job_fields(job_id)
    open_chunks = int(f.get("open_chunks") or 0)
    if open_chunks <= 0 and store.r.llen(keys.retry_pool):
        out["flush"] += flush_pool(ctx, job_id) or 1
    remaining = int(f.get("accepted") or 0) - sum(
        int(f.get(k) or 0) for k in ("succeeded", "failed", "canceled")
    )
    if remaining <= 0:
        ctx.dispatch.send(TaskName.FINALIZE_JOB, (job_id,))
        out["finalize"] += 1
    out["hooks"] += _stale_hooks(ctx, job_id)
    return out


def _stale_hooks(ctx: Context, job_id: str) -> int:
    """Send hooks whose sender died. A pending mark's own subtask comes back after the
    broker's visibility timeout and sends it; so only marks older than that are stale."""
    keys = ctx.store.keys(job_id)
    cutoff = ctx.store.now() - ctx.settings.visibility_timeout_s - ctx.settings.stall_s
    stale = lua.STALE_HOOKS(
        ctx.store.r, lua.HookSets(keys.hooks_pending, keys.hooks_sending), lua.CutoffArg(cutoff)
    )
    return deliver_hooks(ctx, job_id, [m.decode() for m in stale])
