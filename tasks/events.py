"""Event and webhook delivery tasks (the events queue): dispatch, deliver, schedule."""

from __future__ import annotations

from typing import Any

from celery import signals

from batchline import logs
from batchline.messaging.names import TaskName
from batchline.webhooks import deliver, dispatch, scheduler
from tasks.base import PipelineTask
from workers.app import app


@app.task(name=TaskName.DISPATCH_EVENT.value, base=PipelineTask, bind=True)
def dispatch_event(self: PipelineTask) -> None:
    """Read new events from the stream into the lanes of the endpoints that want them."""
    self.step(dispatch.drain)


@app.task(name=TaskName.DELIVER_WEBHOOK.value, base=PipelineTask, bind=True)
def deliver_webhook(self: PipelineTask, endpoint_id: str, job_id: str, event_id: str) -> None:
    """One attempt at delivering the head of an endpoint's lane for a job."""
    self.step(deliver.deliver, endpoint_id, job_id, event_id)


# No task events: its ticks (every few seconds while a retry waits, and from beat) would
# fill Flower's task list; the deliveries it hands out show there as deliver_webhook.
@app.task(name=TaskName.SCHEDULE_WEBHOOKS.value, base=PipelineTask, bind=True, send_events=False)
def schedule_webhooks(
    self: PipelineTask, chain_id: str | None = None, restart: bool = False
) -> None:
    """Send due retries and lost attempts; reschedules itself while anything waits.

    Without a chain id (beat, an operator) it runs once and starts a chain if none lives.
    """
    self.step(scheduler.tick, chain_id, restart=restart)


@signals.worker_ready.connect
def _start_scheduler(sender: Any = None, **_: Any) -> None:
    """A starting worker replaces a scheduler chain that may have died with the old one."""
    try:
        app.send_task(TaskName.SCHEDULE_WEBHOOKS, kwargs={"restart": True}, ignore_result=True)
    except Exception:  # the worker must start even when the broker blips at that moment
        logs.LOGGER.exception("webhook.scheduler_start_failed")
