"""Job events (job.created, batch.ended, ...) in Redis Streams: one for the fleet, one per job.

Every event goes to `<prefix>:events` (what services read with consumer groups, and what
the webhook dispatcher reads with its own group) and to `<prefix>:job:<id>:events` (what
`batchline events JOB --follow` reads). Both are trimmed by age with MINID, never by
length: trimming ignores consumer progress, so a length cap would silently drop entries a
slow group has not read yet.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict

import redis

from batchline.wire import dumps, loads

WEBHOOK_GROUP = "batchline-webhooks"  # the dispatcher's own consumer group
FINAL_TYPES = ("job.completed", "job.canceled")
EVENT_TYPES = (
    "job.created",
    "batch.created",
    "batch.ended",
    "job.progress",
    "job.completed",
    "job.canceled",
    "result.succeeded",
    "result.failed",
)
# A retried EMIT (the reply was lost, redis-py sent it again) must not write the event twice:
# the event id is remembered this long.
EMIT_MARK_MS = 300_000
# How long "a dispatch task is queued" holds before another emit may queue one more.
NUDGE_MS = 60_000

# KEYS: fleet stream, job stream, emitted mark, dispatch-queued flag[, job hash]
# ARGV: event JSON, retention ms, job stream TTL s, webhook group, mark ms, nudge ms
# [, event id]. With the job hash (a job's final event), the event is written only if the
# job has none yet, and its id is recorded there in the same step: never lost (the sweep
# writes it when missing), never written twice.
# Returns {fleet entry id or false when already written, 1 when a dispatch should be sent}.
EMIT = """
if KEYS[5] and redis.call('HGET', KEYS[5], 'final_event_id') then
  return {false, 0}
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[5]) then
  return {false, 0}
end
if KEYS[5] then redis.call('HSET', KEYS[5], 'final_event_id', ARGV[7]) end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minid = string.format('%d-0', now_ms - tonumber(ARGV[2]))
pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], ARGV[4], '$', 'MKSTREAM')
local id = redis.call('XADD', KEYS[1], 'MINID', '~', minid, '*', 'event', ARGV[1])
redis.call('XADD', KEYS[2], 'MINID', '~', minid, '*', 'event', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local nudge = 0
if redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[6]) then nudge = 1 end
return {id, nudge}
"""


class Event(TypedDict):
    """One event as stored, consumed and delivered: id, type, UTC timestamp and data."""

    id: str
    type: str
    timestamp: str  # ISO 8601, UTC, milliseconds: 2026-01-31T12:00:00.123Z
    data: dict[str, Any]  # always job_id and metadata, then the type's own fields


@dataclass(frozen=True)
class EventKeys:
    """The streams and marks of the event log under one prefix."""

    prefix: str

    @property
    def fleet(self) -> str:
        """Stream: every event of every job (consumer groups read this one)."""
        return f"{self.prefix}:events"

    def job(self, job_id: str) -> str:
        """Stream: one job's events, expiring with the retention after its last event."""
        return f"{self.prefix}:job:{job_id}:events"

    def emitted(self, event_id: str) -> str:
        return f"{self.prefix}:evt:{event_id}"

    @property
    def dispatch_queued(self) -> str:
        """String: a webhook dispatch task is queued or running (at most one is sent)."""
        return f"{self.prefix}:wh:dispatch:queued"


def new_event_id() -> str:
    """A unique id that sorts by creation time: evt_ + ms (hex) + 80 random bits."""
    return f"evt_{int(time.time() * 1000):011x}{secrets.token_hex(10)}"


def utc_timestamp(at: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if at is None else at, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_event(job_id: str, type_: str, data: dict[str, Any]) -> Event:
    return {
        "id": new_event_id(),
        "type": type_,
        "timestamp": utc_timestamp(),
        "data": {"job_id": job_id, **data},
    }


def emit(
    r: redis.Redis,
    keys: EventKeys,
    event: Event,
    retention_s: int,
    final_of: str | None = None,
) -> tuple[str | None, bool]:
    """Append the event to both streams at once, trimming by age; (entry id, send dispatch).

    `final_of`: the job hash key, for a job's final event (written once per job).
    The entry id is None when this event id (or the job's final event) was already written.
    """
    job_id = event["data"]["job_id"]
    script = r.register_script(EMIT)
    stream_keys = [keys.fleet, keys.job(job_id), keys.emitted(event["id"]), keys.dispatch_queued]
    args = [dumps(event), retention_s * 1000, retention_s, WEBHOOK_GROUP, EMIT_MARK_MS, NUDGE_MS]
    if final_of is not None:
        stream_keys.append(final_of)
        args.append(event["id"])
    entry, nudge = script(keys=stream_keys, args=args)
    if entry is None:
        return None, False
    return (entry.decode() if isinstance(entry, bytes) else str(entry)), bool(nudge)


def decode_entry(fields: Any) -> Event | None:
    """The event in a stream entry; None for an entry trimmed away while pending, or for
    anything in the stream that is not an event (skipped, never fatal to a reader)."""
    if not fields:
        return None
    raw = fields.get(b"event", fields.get("event"))
    if raw is None:
        return None
    try:
        event = loads(raw)
    except ValueError:
        return None
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not isinstance(event.get("type"), str)
        or not isinstance(event.get("data"), dict)
        or not isinstance(event["data"].get("job_id"), str)
    ):
        return None
    return event  # type: ignore[return-value]


def job_events(r: redis.Redis, keys: EventKeys, job_id: str) -> list[tuple[str, Event]]:
    """Every retained event of the job, oldest first, with its stream entry id."""
    out = []
    entries: Any = r.xrange(keys.job(job_id))
    for entry_id, fields in entries:
        event = decode_entry(fields)
        if event is not None:
            out.append((entry_id.decode(), event))
    return out


def follow(
    r: redis.Redis, keys: EventKeys, job_id: str, block_ms: int = 1000, after: str = "0-0"
) -> Iterator[Event | None]:
    """The job's events as they are written, from the first retained one.

    Yields None after each quiet `block_ms` (so a caller can check on the job) and stops
    after the job's final event.
    """
    stream = keys.job(job_id)
    last = after
    while True:
        reply: Any = r.xread({stream: last}, count=100, block=block_ms)
        if not reply:
            yield None
            continue
        for entry_id, fields in reply[0][1]:
            last = entry_id.decode()
            event = decode_entry(fields)
            if event is None:
                continue
            yield event
            if event["type"] in FINAL_TYPES:
                return
