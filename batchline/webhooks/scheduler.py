"""The webhook scheduler: one self-rescheduling chain hands out due retries and lost attempts.

Retries wait in Redis (a sorted set), never in a broker countdown longer than a tick, so
a wait of ten hours is safe from the broker's visibility timeout. At most one chain lives:
each tick checks it is still the chain on record; a chain that died lets its key expire
and the next change, a worker's start or a beat run starts another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchline.keys import EventKeys
from batchline.webhooks.dispatch import behind
from batchline.webhooks.outbox import Outbox
from batchline.webhooks.wakeups import DELIVER, SCHEDULE, nudge

if TYPE_CHECKING:
    from batchline.pipeline.context import Context

MIN_WAIT_S = 0.05


def tick(ctx: Context, chain_id: str | None, restart: bool = False) -> int:
    """Send every due head; go on with (or start, or stop) the chain; returns how many."""
    outbox = Outbox(ctx.store.r, ctx.settings)
    t = outbox.tick(chain_id, force=restart)
    if t.superseded:
        return 0
    if t.due:
        ctx.dispatch.send_many(DELIVER, t.due)
    if t.chain:
        interval = ctx.settings.webhook_scheduler_interval_s
        wait = interval if t.wait_s is None else min(max(t.wait_s, MIN_WAIT_S), interval)
        ctx.dispatch.send(SCHEDULE, (t.chain,), countdown=wait)
    # A dispatcher that died leaves events unread until the next one; look after it here.
    if behind(ctx.store.r, EventKeys(ctx.settings.key_prefix)):
        nudge(ctx)
    return len(t.due)
