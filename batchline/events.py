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
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypedDict

import redis

from batchline.keys import EventKeys
from batchline.scripts import Script
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


# With the job hash (a job's final event), the event is written only if the job has none
# yet, and its id is recorded there in the same step: never lost (the sweep writes it when
# missing), never written twice.
# Returns {fleet entry id or false when already written, 1 when a dispatch should be sent}.
class EmitKeys(NamedTuple):
    fleet: str  # the fleet stream
    job: str  # the job's stream
    emitted: str  # the event id's emitted mark
    dispatch_queued: str  # the dispatch-queued flag
    final_of: str | None = None  # the job hash, for a job's final event


class EmitArgs(NamedTuple):
    event: bytes  # the event as JSON
    retention_ms: int
    job_stream_ttl_s: int
    group: str  # the webhook dispatcher's consumer group
    mark_ms: int
    nudge_ms: int
    event_id: str | None = None  # with final_of


EMIT = Script("emit_event", EmitKeys, EmitArgs)


class Event(TypedDict):
    """One event as stored, consumed and delivered: id, type, UTC timestamp and data."""

    id: str
    type: str
    timestamp: str  # ISO 8601, UTC, milliseconds: 2026-01-31T12:00:00.123Z
    data: dict[str, Any]  # always job_id and metadata, then the type's own fields


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
    final = final_of is not None
    entry, nudge = EMIT(
        r,
        EmitKeys(
            keys.fleet, keys.job(job_id), keys.emitted(event["id"]), keys.dispatch_queued, final_of
        ),
        EmitArgs(
            dumps(event),
            retention_s * 1000,
            retention_s,
            WEBHOOK_GROUP,
            EMIT_MARK_MS,
            NUDGE_MS,
            event["id"] if final else None,
        ),
    )
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
