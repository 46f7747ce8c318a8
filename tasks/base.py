"""The base task: a step runs with the process's context; Defer becomes a countdown retry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from billiard.einfo import ExceptionWithTraceback
from celery import Task
from celery.utils.saferepr import saferepr
from celery.utils.serialization import get_pickled_exception
from celery.worker.request import Request

from batchline import logs
from batchline.errors import JobConflict, JobNotFound, JobRefused
from batchline.pipeline.context import Context, Defer
from workers.runtime import context

# What a task raises when the caller's input or request is refused (a bad line, a budget,
# Redis memory, another job's id): the caller's to fix, not a fault of the fleet.
REFUSALS = (JobRefused, JobConflict, JobNotFound)
REFUSED_EVENT = "task-refused"  # Flower shows the task in state REFUSED


class BatchlineRequest(Request):
    """A task's events as an operator needs them in Flower.

    - A refusal ends the task REFUSED (a custom state), not FAILURE: red in Flower means a
      fault to look into. The caller still gets the error (the result backend records it).
    - A deferred step (a countdown retry: a poll of a batch still running) is shown with its
      reason and no traceback, so a task that then succeeds carries no stale traceback.
    """

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        exc = get_pickled_exception(exc)
        if not isinstance(exc, REFUSALS):
            super().on_failure(exc_info, send_failed_event, return_ok)
            return
        super().on_failure(exc_info, send_failed_event=False, return_ok=True)
        self.send_event(REFUSED_EVENT, exception=saferepr(exc))

    def on_retry(self, exc_info: Any) -> None:
        if self.task.acks_late:
            self.acknowledge()
        retry = exc_info.exception
        why = retry.exc.reason if isinstance(retry.exc, Defer) else saferepr(retry.exc)
        self.send_event("task-retried", exception=f"again {retry.humanize()}: {why}", traceback="")


class PipelineTask(Task):
    """Every Batchline task. Retries are asked for by raising Defer, and run as countdowns."""

    abstract = True
    Request = BatchlineRequest
    ignore_result = True
    # A Redis blip (restart, failover) must not fail a step: try again with backoff.
    autoretry_for = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
    retry_backoff = 1
    retry_backoff_max = 60
    retry_jitter = True
    # Waits are bounded by time in the steps themselves (a batch's expiry, a create's
    # deadline), not by a retry count.
    max_retries = None
    throws = REFUSALS

    def step(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        ctx = context()
        try:
            return fn(ctx, *args, **kwargs)
        except Defer as d:
            delay = min(d.delay_s, ctx.settings.max_countdown_s)
            _note_due(ctx, args, delay)
            logs.event(
                "task.deferred",
                level=10,
                task=self.name,
                delay_s=round(delay, 3),
                reason=d.reason,
                job_id=args[0] if args else None,
            )
            raise self.retry(countdown=delay, exc=d) from None


def _note_due(ctx: Context, args: tuple[Any, ...], delay: float) -> None:
    """Tell the sweeper that this chunk's task is scheduled, not lost."""
    if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], int):
        ctx.store.touch_chunk(args[0], args[1], due_at=ctx.store.now() + delay)
