"""The base task: a step runs with the process's context; Defer becomes a countdown retry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from celery import Task

from batchline import logs
from batchline.errors import JobConflict, JobNotFound, JobRefused
from batchline.pipeline.context import Context, Defer
from workers.runtime import context


class PipelineTask(Task):
    """Every Batchline task. Retries are asked for by raising Defer, and run as countdowns."""

    abstract = True
    ignore_result = True
    # A Redis blip (restart, failover) must not fail a step: try again with backoff.
    autoretry_for = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
    retry_backoff = 1
    retry_backoff_max = 60
    retry_jitter = True
    # Waits are bounded by time in the steps themselves (a batch's expiry, a create's
    # deadline), not by a retry count.
    max_retries = None
    throws = (JobRefused, JobConflict, JobNotFound)

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
            raise self.retry(countdown=delay) from None


def _note_due(ctx: Context, args: tuple[Any, ...], delay: float) -> None:
    """Tell the sweeper that this chunk's task is scheduled, not lost."""
    if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], int):
        ctx.store.touch_chunk(args[0], args[1], due_at=ctx.store.now() + delay)
