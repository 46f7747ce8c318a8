"""Worker liveness in Redis: each worker's heartbeat and the messages it holds, as the
recovery pass, leases, doctor and metrics read them."""

from __future__ import annotations

import base64
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import redis

from batchline.keys import LivenessKeys, RecoveryKeys
from batchline.messaging.names import TASK_PREFIX
from batchline.redisconn import connect
from batchline.settings import Settings

# kombu's Redis transport (ack emulation) keeps every message a worker holds in a hash of
# delivery tag -> [payload, exchange, routing key], indexed by delivery time in a sorted set.
# Batchline never renames them.
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"

# Times written by different hosts are compared with this much margin (their clocks differ
# a little).
CLOCK_MARGIN_S = 2.0
# A dead or stopped worker's last report is kept this long for the recovery pass to read.
REPORT_TTL_S = 86400

RUNNING, STOPPING, STOPPED = "running", "stopping", "stopped"
# A chunk whose results made no progress for this many recovery passes after a worker without
# ack emulation died is published again even while the results queue is busy (the lost
# results cannot be told apart from queued ones then).
QUIET_PASSES = 2


@dataclass
class Watch:
    """A chunk in the results stage when a worker without ack emulation died."""

    worker: str  # the dead worker's node name
    since: float  # when its death was handled
    processed: int  # results processed when last looked at
    seen: float  # when `processed` last changed (or the fan-out was last started again)
    fan_out: bool = False  # the dead worker held the chunk's fan-out
    fan_out_sent: float = 0.0  # when this pass last started the fan-out again

    def dumps(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: bytes) -> Watch:
        return cls(**orjson.loads(raw))


@dataclass(frozen=True)
class Held:
    """One message a worker holds: reserved, running, or waiting for its countdown."""

    tag: str
    task: str
    job_id: str | None = None
    chunk: int | None = None

    def as_list(self) -> list[Any]:
        return [self.tag, self.task, self.job_id, self.chunk]

    @classmethod
    def from_list(cls, raw: list[Any]) -> Held:
        tag, task, job_id, chunk = (list(raw) + [None] * 4)[:4]
        return cls(str(tag), str(task or ""), job_id, chunk if isinstance(chunk, int) else None)


@dataclass
class Report:
    """What a worker last wrote about itself."""

    worker_id: str
    node: str = ""
    pid: int = 0
    state: str = RUNNING
    queues: tuple[str, ...] = ()
    ack_emulation: bool = True
    started_at: float = 0.0
    at: float = 0.0  # last heartbeat
    held_at: float = 0.0  # when `held` was read from the worker's channel
    stopped_at: float = 0.0
    held: list[Held] = field(default_factory=list)
    alive: bool = False  # its alive key exists (Redis's clock decides)

    @classmethod
    def decode(cls, worker_id: str, raw: dict[bytes, bytes], alive: bool) -> Report:
        f = {k.decode(): v.decode() for k, v in raw.items()}

        def num(name: str) -> float:
            try:
                return float(f.get(name) or 0)
            except ValueError:
                return 0.0

        try:
            held = [Held.from_list(h) for h in orjson.loads(f.get("held") or "[]")]
        except (orjson.JSONDecodeError, TypeError):
            held = []
        return cls(
            worker_id=worker_id,
            node=f.get("node", worker_id),
            pid=int(num("pid")),
            state=f.get("state", RUNNING),
            queues=tuple(q for q in f.get("queues", "").split(",") if q),
            ack_emulation=f.get("ack_emulation", "1") == "1",
            started_at=num("started_at"),
            at=num("at"),
            held_at=num("held_at"),
            stopped_at=num("stopped_at"),
            held=held,
            alive=alive,
        )

    @property
    def dead(self) -> bool:
        """Stopped heartbeating without saying goodbye (killed, or its host went away)."""
        return not self.alive and self.state != STOPPED

    @property
    def stopped(self) -> bool:
        return self.state == STOPPED

    def silent_for(self, now: float) -> float:
        return max(0.0, now - self.at)


def write_heartbeat(
    r: redis.Redis,
    keys: LivenessKeys,
    worker_id: str,
    fields: dict[str, Any],
    dead_after_s: float,
    held: list[Held] | None,
) -> None:
    """One heartbeat, in one MULTI: registry, report and alive key, with what the worker holds
    at this moment (None: not known now, the last list stands)."""
    now = time.time()
    mapping: dict[str, Any] = {**fields, "at": now}
    if held is not None:
        mapping["held"] = orjson.dumps([h.as_list() for h in held])
        mapping["held_at"] = now
    pipe = r.pipeline(transaction=True)
    pipe.zadd(keys.registry, {worker_id: now})
    pipe.hset(keys.report(worker_id), mapping=mapping)
    pipe.expire(keys.report(worker_id), REPORT_TTL_S)
    pipe.set(keys.alive(worker_id), now, px=max(1, int(dead_after_s * 1000)))
    pipe.execute()


def write_stopped(r: redis.Redis, keys: LivenessKeys, worker_id: str) -> None:
    """The worker's last word: it stopped, and kombu gave back what it held."""
    pipe = r.pipeline(transaction=True)
    pipe.hset(
        keys.report(worker_id),
        mapping={"state": STOPPED, "stopped_at": time.time(), "held": "[]"},
    )
    pipe.delete(keys.alive(worker_id))
    pipe.execute()


# A report's fields besides the messages held (a light read of the fleet's state).
SUMMARY_FIELDS = ("node", "pid", "state", "queues", "ack_emulation", "started_at", "at")


def read_reports(
    r: redis.Redis, keys: LivenessKeys, held: bool = True
) -> tuple[list[Report], list[str]]:
    """Every registered worker's report (without what it holds unless `held`), and the ids
    registered whose report is missing."""
    ids = [i.decode() for i in r.zrange(keys.registry, 0, -1)]
    if not ids:
        return [], []
    pipe = r.pipeline(transaction=False)
    for worker_id in ids:
        if held:
            pipe.hgetall(keys.report(worker_id))
        else:
            pipe.hmget(keys.report(worker_id), *SUMMARY_FIELDS)
        pipe.exists(keys.alive(worker_id))
    replies = pipe.execute()
    reports: list[Report] = []
    missing: list[str] = []
    for i, worker_id in enumerate(ids):
        raw, alive = replies[2 * i], bool(replies[2 * i + 1])
        if not held:
            raw = {f.encode(): v for f, v in zip(SUMMARY_FIELDS, raw, strict=True) if v}
        if not raw:
            missing.append(worker_id)
            continue
        reports.append(Report.decode(worker_id, raw, alive))
    return reports, missing


# --- what jobs wait for (status, doctor, metrics) ---


@dataclass
class Wait:
    """Something a job waits for while the fleet recovers from a worker's death."""

    kind: str  # worker_silent | worker_dead | lost_results
    what: str  # in words, for people
    until: float  # when the recovery pass is due to have handed it over
    since: float
    worker: str | None = None
    job_id: str | None = None
    chunks: list[int] = field(default_factory=list)
    messages: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def waits(
    r: redis.Redis,
    s: Settings,
    job_id: str | None = None,
    broker: redis.Redis | None = None,
    now: float | None = None,
) -> list[Wait]:
    """What the fleet's jobs (or one job) wait for: messages held by a worker that went
    silent or died, and results a dead worker may have taken with it. Cheap while every
    worker heartbeats: the broker's unacked set is read only when one does not."""
    now = time.time() if now is None else now
    if broker is None:
        broker = r if s.broker == s.state else connect(s.broker, s)
    lk, rk = LivenessKeys(s.key_prefix), RecoveryKeys(s.key_prefix)
    # Every worker heartbeating and nothing watched (nearly always): one light read.
    summary, _ = read_reports(r, lk, held=False)
    if all(rep.stopped or _healthy(rep, now, s) for rep in summary) and not r.exists(rk.watched):
        return []
    reports, _ = read_reports(r, lk)
    healthy = [rep for rep in reports if _healthy(rep, now, s)]
    unwell = [rep for rep in reports if not rep.stopped and not _healthy(rep, now, s)]
    watched = r.hgetall(rk.watched)
    if not unwell and not watched:
        return []
    last = r.get(rk.last_run)
    next_pass = max(now, (float(last) if last else now) + s.recovery_interval_s)

    def until_of(rep: Report) -> float:
        if rep.alive:  # found dead after dead_after_s, handed over at the pass after that
            return max(next_pass, rep.at + s.worker_dead_after_s + s.recovery_interval_s)
        return next_pass

    held: dict[tuple[str, str | None], list[Held]] = {}
    for rep in unwell:
        if not rep.ack_emulation:  # what it holds is only in its report
            for h in rep.held:
                held.setdefault((rep.worker_id, h.job_id), []).append(h)
    if any(rep.ack_emulation for rep in unwell):
        for rep, h in _unacked_of(broker, healthy, unwell, now):
            held.setdefault((rep.worker_id, h.job_id), []).append(h)
    out: list[Wait] = []
    for rep in unwell:
        jobs = sorted({jid for wid, jid in held if wid == rep.worker_id}, key=str)
        if job_id is None and not jobs:
            jobs = [None]
        for jid in jobs:
            if job_id is not None and jid != job_id:
                continue
            items = held.get((rep.worker_id, jid), [])
            until = until_of(rep)
            state = "silent" if rep.alive else "dead"
            out.append(
                Wait(
                    f"worker_{state}",
                    f"{len(items)} message(s) held by worker {rep.node}, {state} since "
                    f"{_clock(rep.at)}; handed to live workers by {_clock(until)}",
                    until,
                    rep.at,
                    rep.node,
                    jid,
                    sorted({h.chunk for h in items if h.chunk is not None}),
                    len(items),
                )
            )
    for raw_ref, raw in watched.items():
        jid, _, number = raw_ref.decode().rpartition(":")
        if job_id is not None and jid != job_id:
            continue
        watch = Watch.loads(raw)
        until = max(watch.seen + QUIET_PASSES * s.recovery_interval_s, next_pass)
        out.append(
            Wait(
                "lost_results",
                f"results of chunk {number} that worker {watch.worker} took with it: published "
                f"again once nobody holds any, by {_clock(until)} while none make progress",
                until,
                watch.since,
                watch.worker,
                jid,
                [int(number)],
            )
        )
    return out


def _healthy(rep: Report, now: float, s: Settings) -> bool:
    return rep.alive and rep.silent_for(now) <= 2 * s.worker_heartbeat_s


def _unacked_of(
    broker: redis.Redis, healthy: list[Report], unwell: list[Report], now: float
) -> list[tuple[Report, Held]]:
    """Messages in the broker's unacked set held by a worker that went silent or died: those
    its report lists, and those no healthy worker holds (taken after its last report)."""
    mine = {h.tag: rep for rep in unwell for h in rep.held}
    theirs = {h.tag for rep in healthy for h in rep.held}
    # (a healthy worker's report lists what it took before the report was written)
    settled = min((rep.held_at for rep in healthy), default=now) - CLOCK_MARGIN_S
    fallback = max(unwell, key=lambda rep: rep.at)
    tags = [
        t.decode()
        for t, score in broker.zrange(UNACKED_INDEX_KEY, 0, -1, withscores=True)
        if t.decode() in mine or (t.decode() not in theirs and score < settled)
    ]
    out: list[tuple[Report, Held]] = []
    for start in range(0, len(tags), 500):
        part = tags[start : start + 500]
        for tag, raw in zip(part, broker.hmget(UNACKED_KEY, part), strict=True):
            h = describe_unacked(tag, raw) if raw is not None else None
            if h is not None and h.task.startswith(TASK_PREFIX):  # not another app's
                out.append((mine.get(tag, fallback), h))
    return out


def describe_unacked(tag: str, raw: bytes) -> Held | None:
    """Task, job and chunk of an entry of kombu's unacked hash; None if it is not Celery's."""
    try:
        payload, _, _ = orjson.loads(raw)
        headers = payload.get("headers") or {}
        body = payload.get("body") or ""
        if (payload.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = orjson.loads(body)[0]
    except (orjson.JSONDecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
    task = str(headers.get("task") or "")
    if not task:
        return None
    return Held(tag, task, *held_ids(args))


def held_ids(args: Any) -> tuple[str | None, int | None]:
    """The job id and chunk number a Batchline task's arguments start with, if they do."""
    job_id = args[0] if args and isinstance(args[0], str) else None
    chunk = args[1] if len(args or ()) > 1 and type(args[1]) is int else None
    return job_id, chunk


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t)) + "Z"
