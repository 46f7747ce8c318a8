"""The tasks that move webhook work on: a lane's new head, a scheduler chain, the dispatcher."""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchline.events import NUDGE_MS
from batchline.keys import EventKeys
from batchline.messaging.names import TaskName
from batchline.webhooks.outbox import Next

if TYPE_CHECKING:
    from batchline.pipeline.context import Context

DELIVER = TaskName.DELIVER_WEBHOOK
SCHEDULE = TaskName.SCHEDULE_WEBHOOKS
DISPATCH = TaskName.DISPATCH_EVENT


def send_next(ctx: Context, endpoint_id: str, job_id: str, nxt: Next) -> None:
    """Send the lane's new head now, and start a scheduler chain when one is needed."""
    if nxt.event_id:
        ctx.dispatch.send(DELIVER, (endpoint_id, job_id, nxt.event_id))
    if nxt.chain:
        interval = ctx.settings.webhook_scheduler_interval_s
        ctx.dispatch.send(SCHEDULE, (nxt.chain,), countdown=interval)


def nudge(ctx: Context) -> None:
    """Send a dispatch task unless one is already queued or running."""
    ek = EventKeys(ctx.settings.key_prefix)
    if ctx.store.r.set(ek.dispatch_queued, "1", nx=True, px=NUDGE_MS):
        ctx.dispatch.send(DISPATCH, ())
