"""One `list` call answers the polls of many batches: a short-lived snapshot kept in Redis.

With many batches in flight, each poll chain reads its batch from a snapshot of the list
endpoint (up to 1,000 batches per page) that is refreshed at most once per poll interval,
by one worker at a time, instead of spending one `retrieve` per batch per poll.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchline import api
from batchline.errors import RateLimited, RetryableApiError
from batchline.pipeline.context import Context, Defer

if TYPE_CHECKING:
    from anthropic.types.messages import MessageBatch

MAX_PAGES = 20
PAGE_SIZE = 1000
CLOCK_SKEW_S = 120.0
REFRESH_WAIT_S = 0.5


def _keys(ctx: Context) -> tuple[str, str, str]:
    fleet = ctx.store.fleet
    return fleet.poll_in_flight, fleet.poll_snapshot, fleet.poll_snapshot_at


def track(ctx: Context, batch_id: str, created_at: float) -> None:
    """A batch is in flight: list refreshes look for it."""
    ctx.store.r.zadd(_keys(ctx)[0], {batch_id: created_at})


def untrack(ctx: Context, batch_id: str) -> None:
    index, snap, _ = _keys(ctx)
    pipe = ctx.store.r.pipeline(transaction=False)
    pipe.zrem(index, batch_id)
    pipe.hdel(snap, batch_id)
    pipe.execute()


def in_flight(ctx: Context) -> int:
    return int(ctx.store.r.zcard(_keys(ctx)[0]))


def use_list(ctx: Context) -> bool:
    threshold = ctx.settings.poll_list_threshold
    return bool(threshold) and in_flight(ctx) >= threshold


def lookup(ctx: Context, batch_id: str) -> MessageBatch | None:
    """The batch as of a snapshot at most one poll interval old; None when the list did not
    show it (the caller falls back to `retrieve`)."""
    _, snap, snap_at = _keys(ctx)
    r = ctx.store.r
    at = r.get(snap_at)
    if at is None or ctx.store.now() - float(at) >= ctx.settings.poll_interval_s:
        lease = ctx.lease("poll-list")
        if not lease.acquire():
            raise Defer(REFRESH_WAIT_S, "another worker is refreshing the poll snapshot")
        try:
            refresh(ctx)
        finally:
            lease.release()
    raw = r.hget(snap, batch_id)
    if not raw:
        return None
    from anthropic.types.messages import MessageBatch

    return MessageBatch.model_validate_json(raw)


def refresh(ctx: Context) -> int:
    """Walk the list endpoint back to the oldest batch in flight; returns pages read."""
    index, snap, snap_at = _keys(ctx)
    r = ctx.store.r
    wanted = {m.decode() for m in r.zrange(index, 0, -1)}
    oldest = r.zrange(index, 0, 0, withscores=True)
    since = (float(oldest[0][1]) if oldest else ctx.store.now()) - CLOCK_SKEW_S
    started = ctx.store.now()
    found: dict[str, bytes] = {}
    cursor: str | None = None
    pages = 0
    while pages < MAX_PAGES:
        try:
            ctx.limiter.take("list")
        except RateLimited as exc:
            raise Defer(exc.retry_after_s or 1, str(exc)) from None
        try:
            page, cursor = api.list_page(ctx.client, limit=PAGE_SIZE, after_id=cursor)
        except RetryableApiError as exc:
            if exc.status == 429 and exc.retry_after_s:
                ctx.limiter.pause(exc.retry_after_s)
            raise Defer(exc.retry_after_s or ctx.backoff_s(1), str(exc)) from None
        pages += 1
        for b in page:
            if b.id in wanted:
                found[b.id] = b.model_dump_json().encode()
        if cursor is None or len(found) == len(wanted):
            break
        if page and page[-1].created_at.timestamp() < since:
            break
    pipe = r.pipeline(transaction=True)
    pipe.delete(snap)
    if found:
        pipe.hset(snap, mapping=found)
    pipe.set(snap_at, started)
    pipe.execute()
    r.hincrby(ctx.store.fleet.stats, "poll_list_refreshes", 1)
    return pages
