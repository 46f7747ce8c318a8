"""The recovery pass (beat, every recovery_interval_s, once across the fleet): hands what a
dead worker held to live workers within a minute instead of the broker's visibility timeout.

- A message in the broker's unacked set that no live worker reports holding, and that every
  live worker's report is newer than, belongs to nobody alive: it goes back to its queue
  (kombu's own restore, as its visibility timeout would do an hour later).
- A worker whose heartbeat stopped is dead. Its hook marks are sent, retry planning and
  completion of the chunks it may have been finishing are re-driven, and if it consumed the
  results queue without ack emulation (what it held is nowhere in Redis) the results stage
  of every open chunk is watched: a fan-out nobody runs is started again, and results still
  unprocessed once nobody holds any of them are published again.

Every step this repeats is idempotent: results are recorded once by a script, hooks are
claimed once, polls carry a generation, fan-outs and creates hold leases.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable

import orjson
import redis

from batchline import logs
from batchline import scripts as lua
from batchline.lease import HELD, ORPHANED
from batchline.liveness import (
    CLOCK_MARGIN_S,
    QUIET_PASSES,
    UNACKED_INDEX_KEY,
    UNACKED_KEY,
    LivenessKeys,
    RecoveryKeys,
    Report,
    Watch,
    read_reports,
)
from batchline.messaging.names import TaskName
from batchline.messaging.queues import Queue
from batchline.pipeline import results
from batchline.pipeline.context import Context
from batchline.pipeline.terminal import deliver_hooks
from batchline.settings import Settings
from batchline.store import FINAL_JOB_STATES, Chunk

RESULTS_QUEUE = Queue.RESULTS.value
FAN_OUT = TaskName.FAN_OUT_RESULTS
PROCESS = TaskName.PROCESS_RESULT
SLICE = 500
# kombu's Redis transport keeps a queue's priority levels in lists named queue + SEP + level.
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)

Restore = Callable[[list[str]], int]


def recover(
    ctx: Context, broker: redis.Redis, restore: Restore, queues: Iterable[str]
) -> dict[str, int]:
    """One pass; returns what it did (restored, dead, republished, ...)."""
    s, store = ctx.settings, ctx.store
    rk, lk = RecoveryKeys(s.key_prefix), LivenessKeys(s.key_prefix)
    if not store.r.set(rk.lock, "1", nx=True, ex=max(1, int(s.recovery_interval_s * 0.8))):
        return {}
    now = time.time()
    store.r.set(rk.last_run, now)
    done: Counter[str] = Counter()
    reports, missing = read_reports(store.r, lk)
    live = [rep for rep in reports if rep.alive]
    if _forget_missing(store.r, lk, missing, now, s):
        # A worker heartbeats and its report is not there: what it holds is unknown.
        logs.warning("recovery.skipped", reason="a live worker's report is missing")
        return {}
    done["restored"] += restore_orphans(broker, restore, live, now, s, set(queues))
    for rep in reports:
        if rep.dead:
            done.update(_after_death(ctx, rep, now))
        if not rep.alive:
            store.r.zrem(lk.registry, rep.worker_id)
            store.r.delete(lk.report(rep.worker_id))
    done.update(_watch(ctx, broker, live, now))
    if done:
        pipe = store.r.pipeline(transaction=False)
        for name, n in done.items():
            pipe.hincrby(store.fleet.stats, f"recovery:{name}", n)
        pipe.execute()
    return dict(done)


def _forget_missing(
    r: redis.Redis, lk: LivenessKeys, missing: list[str], now: float, s: Settings
) -> bool:
    """Drop registry entries whose report expired long ago; True if any recent one lacks it."""
    recent = False
    for worker_id in missing:
        score = r.zscore(lk.registry, worker_id) or 0.0
        if now - score > s.worker_dead_after_s:
            r.zrem(lk.registry, worker_id)
        else:
            recent = True
    return recent


# --- messages nobody alive holds ---


def orphans(
    broker: redis.Redis, live: list[Report], now: float, s: Settings, queues: set[str]
) -> list[str]:
    """Delivery tags in the unacked set that no live worker holds, of Batchline's queues."""
    held = {h.tag for rep in live for h in rep.held}
    # A live worker's report lists what it held when it was written: only tags delivered
    # before every live worker's last report can be told to belong to nobody alive.
    horizon = min((rep.held_at for rep in live), default=now) - CLOCK_MARGIN_S
    cutoff = min(now - 2 * s.worker_heartbeat_s - CLOCK_MARGIN_S, horizon)
    tags = [t.decode() for t in broker.zrangebyscore(UNACKED_INDEX_KEY, "-inf", cutoff)]
    tags = [t for t in tags if t not in held]
    out: list[str] = []
    for start in range(0, len(tags), SLICE):
        part = tags[start : start + SLICE]
        for tag, raw in zip(part, broker.hmget(UNACKED_KEY, part), strict=True):
            if raw is not None and unacked_queue(raw) in queues:
                out.append(tag)
    return out


def restore_orphans(
    broker: redis.Redis, restore: Restore, live: list[Report], now: float, s: Settings,
    queues: set[str],
) -> int:  # fmt: skip
    tags = orphans(broker, live, now, s, queues)
    if not tags:
        return 0
    restored = restore(tags)
    logs.warning("recovery.restored", messages=restored)
    return restored


def unacked_queue(raw: bytes) -> str | None:
    """The routing key (Batchline's queue name) of an entry of kombu's unacked hash."""
    try:
        _, _, routing_key = orjson.loads(raw)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None
    return routing_key if isinstance(routing_key, str) else None


# --- a dead worker ---


def _after_death(ctx: Context, rep: Report, now: float) -> Counter[str]:
    """Re-drive what a dead worker may have left half done."""
    s, store = ctx.settings, ctx.store
    done: Counter[str] = Counter(dead=1)
    logs.warning(
        "worker.dead",
        worker=rep.node,
        silent_s=round(rep.silent_for(now), 1),
        held=len(rep.held),
        ack_emulation=rep.ack_emulation,
        jobs=",".join(sorted({h.job_id for h in rep.held if h.job_id})) or None,
    )
    # It died at most one heartbeat after its last: a hook mark older than that and still
    # not sent was its own (a live worker sends its marks within milliseconds).
    cutoff = min(now, rep.at + s.worker_heartbeat_s + CLOCK_MARGIN_S)
    results_lost = not rep.ack_emulation and RESULTS_QUEUE in rep.queues
    fan_outs = {(h.job_id, h.chunk) for h in rep.held if h.task == FAN_OUT}
    for raw in store.r.smembers(store.fleet.active_jobs):
        job_id = raw.decode()
        done["hooks"] += _stale_hooks(ctx, job_id, cutoff)
        if store.job_state(job_id) in (*FINAL_JOB_STATES, "ingesting", None):
            continue
        for chunk in store.chunks(job_id):
            if chunk.state != "ended":
                continue
            all_in = chunk.fields.get("fanout_done") == "1" and (
                chunk.number_field("processed") >= chunk.count
            )
            if all_in:
                # Its last result may have been recorded by the dead worker, which then
                # never sent the plan (a redelivered result finds it recorded and stops).
                ctx.dispatch.send(TaskName.PLAN_RETRIES, (job_id, chunk.number))
                done["plans"] += 1
            elif results_lost:
                watch = Watch(
                    worker=rep.node,
                    since=now,
                    processed=chunk.number_field("processed"),
                    seen=now,
                    fan_out=(job_id, chunk.number) in fan_outs,
                )
                store.r.hset(RecoveryKeys(s.key_prefix).watched, chunk.ref, watch.dumps())
                done["watched"] += 1
        _finalize_if_done(ctx, job_id)
    return done


def _stale_hooks(ctx: Context, job_id: str, cutoff: float) -> int:
    keys = ctx.store.keys(job_id)
    stale = lua.STALE_HOOKS(
        ctx.store.r, lua.HookSets(keys.hooks_pending, keys.hooks_sending), lua.CutoffArg(cutoff)
    )
    return deliver_hooks(ctx, job_id, [m.decode() for m in stale])


def _finalize_if_done(ctx: Context, job_id: str) -> None:
    f = ctx.store.job_fields(job_id)
    remaining = int(f.get("accepted") or 0) - sum(
        int(f.get(k) or 0) for k in ("succeeded", "failed", "canceled")
    )
    if remaining <= 0:
        ctx.dispatch.send(TaskName.FINALIZE_JOB, (job_id,))


# --- chunks whose results a dead worker may have taken with it ---


def results_waiting(broker: redis.Redis) -> int:
    """Messages waiting in the results queue (every priority level)."""
    pipe = broker.pipeline(transaction=False)
    for step in PRIORITY_STEPS:
        pipe.llen(RESULTS_QUEUE if step == 0 else f"{RESULTS_QUEUE}{PRIORITY_SEP}{step}")
    return int(sum(pipe.execute()))


def _watch(ctx: Context, broker: redis.Redis, live: list[Report], now: float) -> Counter[str]:
    store, s = ctx.store, ctx.settings
    key = RecoveryKeys(s.key_prefix).watched
    done: Counter[str] = Counter()
    entries = store.r.hgetall(key)
    if not entries:
        return done
    waiting = results_waiting(broker)
    held_live = {(h.task, h.job_id, h.chunk) for rep in live for h in rep.held}
    for raw_ref, raw in entries.items():
        ref = raw_ref.decode()
        job_id, _, number = ref.rpartition(":")
        watch = Watch.loads(raw)
        chunk = store.chunk(job_id, int(number))
        if chunk is None or chunk.state != "ended":
            store.r.hdel(key, ref)
            continue
        nobody = waiting == 0
        if chunk.fields.get("fanout_done") != "1":
            if _fan_out_lost(ctx, chunk, watch, nobody, held_live, now):
                ctx.dispatch.send(FAN_OUT, (job_id, chunk.number, chunk.batch_id))
                watch.fan_out_sent = watch.seen = now
                store.r.hset(key, ref, watch.dumps())
                done["fan_outs"] += 1
                logs.warning("recovery.fan_out", job_id=job_id, chunk=chunk.number)
            continue
        processed = chunk.number_field("processed")
        if processed >= chunk.count:
            store.r.hdel(key, ref)
            continue
        if processed != watch.processed:
            watch.processed, watch.seen = processed, now
            store.r.hset(key, ref, watch.dumps())
        quiet = now - watch.seen >= QUIET_PASSES * s.recovery_interval_s
        if quiet or (nobody and (PROCESS, job_id, chunk.number) not in held_live):
            sent = results.republish_unprocessed(ctx, chunk)
            store.r.hdel(key, ref)
            done["republished"] += sent
            logs.warning("recovery.republished", job_id=job_id, chunk=chunk.number, results=sent)
    return done


def _fan_out_lost(
    ctx: Context,
    chunk: Chunk,
    watch: Watch,
    queue_empty: bool,
    held_live: set[tuple[str, str | None, int | None]],
    now: float,
) -> bool:
    """The chunk's fan-out is neither running, nor queued, nor held by a live worker."""
    state = ctx.lease(f"fanout:{chunk.ref}").state()
    if state == HELD:
        return False  # a live worker runs it
    if not watch.fan_out_sent and (state == ORPHANED or watch.fan_out):
        return True  # the dead worker was running it, or held it
    if (
        watch.fan_out_sent
        and now - watch.fan_out_sent < QUIET_PASSES * ctx.settings.recovery_interval_s
    ):
        return False  # the one started again may still be on its way
    return queue_empty and (FAN_OUT, chunk.job_id, chunk.number) not in held_live
