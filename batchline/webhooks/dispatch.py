"""The webhook dispatcher: reads the event stream with its own consumer group, fills the lanes.

One dispatcher reads at a time (a lock), so events enter every lane in stream order. It
reads its own pending entries first (a dispatcher that died left them unacknowledged),
then new ones, and acknowledges after the lanes hold them. Queuing is idempotent per
endpoint and event id, so an entry read twice, or an event written twice, goes out once.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import redis

from batchline import logs
from batchline.errors import JobNotFound
from batchline.events import WEBHOOK_GROUP, Event, decode_entry
from batchline.keys import EventKeys, WebhookKeys
from batchline.scripts import Script
from batchline.webhooks.endpoints import targets
from batchline.webhooks.outbox import Outbox
from batchline.webhooks.wakeups import nudge, send_next

if TYPE_CHECKING:
    from batchline.pipeline.context import Context

CONSUMER = "dispatcher"  # one reader at a time, so one name: its pending list is its own
BATCH = 200
LOCK_MS = 60_000
MAX_RUN_S = 30.0  # then hand over to a fresh task rather than hold a worker


class LockKey(NamedTuple):
    lock: str


class TokenArg(NamedTuple):
    token: str


# Drop the dispatch lock if this run still holds it.
RELEASE = Script("dispatch_release", LockKey, TokenArg)


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def behind(r: redis.Redis, ek: EventKeys) -> bool:
    """Whether the dispatcher's group has entries it has not read or not acknowledged."""
    try:
        groups: Any = r.xinfo_groups(ek.fleet)
        stream: Any = r.xinfo_stream(ek.fleet)
    except redis.exceptions.ResponseError:  # no stream yet
        return False
    for g in groups:
        name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
        if name != WEBHOOK_GROUP:
            continue
        last = g["last-delivered-id"]
        last = last.decode() if isinstance(last, bytes) else str(last)
        top = stream["last-generated-id"]
        top = top.decode() if isinstance(top, bytes) else str(top)
        return bool(g["pending"]) or _id(top) > _id(last)
    return False


def route(ctx: Context, outbox: Outbox, event: Event) -> int:
    """Queue one event for every endpoint that wants it; returns how many were new."""
    job_id = str(event["data"].get("job_id") or "")
    url = None
    if job_id:
        try:
            url = ctx.store.options(job_id).webhook_url
        except JobNotFound:
            url = None
    queued = 0
    for endpoint in targets(ctx.settings, event, url):
        fresh, nxt = outbox.enqueue(endpoint, event)
        queued += int(fresh)
        send_next(ctx, endpoint.id, job_id, nxt)
    return queued


def _read(ctx: Context, outbox: Outbox, token: str, deadline: float) -> bool:
    """Read (pending first, then new) until the stream is drained or time is up."""
    r = ctx.store.r
    ek = EventKeys(ctx.settings.key_prefix)
    lock = WebhookKeys(ctx.settings.key_prefix).dispatch_lock
    for start in ("0", ">"):
        while time.monotonic() < deadline:
            reply: Any
            try:
                reply = r.xreadgroup(WEBHOOK_GROUP, CONSUMER, {ek.fleet: start}, count=BATCH)
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                r.xgroup_create(ek.fleet, WEBHOOK_GROUP, id="$", mkstream=True)
                return True
            entries = reply[0][1] if reply else []
            if not entries:
                break
            for _entry_id, fields in entries:
                event = decode_entry(fields)
                if event is not None:
                    route(ctx, outbox, event)
            r.xack(ek.fleet, WEBHOOK_GROUP, *[e[0] for e in entries])
            if r.get(lock) != token.encode():
                return False  # the lock was lost: another dispatcher carries on
            r.pexpire(lock, LOCK_MS)
    return time.monotonic() < deadline


def drain(ctx: Context) -> None:
    """Move every unread event into the lanes of the endpoints that want it."""
    r = ctx.store.r
    ek = EventKeys(ctx.settings.key_prefix)
    lock = WebhookKeys(ctx.settings.key_prefix).dispatch_lock
    outbox = Outbox(r, ctx.settings)
    deadline = time.monotonic() + MAX_RUN_S
    while True:
        token = secrets.token_hex(8)
        if not r.set(lock, token, nx=True, px=LOCK_MS):
            # The holder clears the queued flag and looks at the stream once more before
            # it stops, so whatever this task was sent for is read.
            return
        try:
            finished = _read(ctx, outbox, token, deadline)
        finally:
            RELEASE(r, LockKey(lock), TokenArg(token))
        r.delete(ek.dispatch_queued)
        if not behind(r, ek):
            return
        if not finished:
            logs.event("webhook.dispatch_handover", level=10)
            nudge(ctx)
            return
