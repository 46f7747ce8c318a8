"""Sending pipeline tasks by name (routed to their stage queue) and hooks to their queue."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis
from celery import Celery

from batchline.messaging.names import TaskName
from batchline.messaging.publish import Hook, publish_with, push_tasks
from batchline.messaging.queues import ROUTES

PUBLISH_BATCH = 500  # publishes per pipelined round trip to Redis
DEFAULT_HOOK_QUEUE = "celery"  # Celery's default queue, where another app's worker listens
TASK_NAMES = {t.value for t in TaskName}


class CeleryDispatcher:
    """Sends pipeline tasks by name (routed to their stage queue) and hooks to their queue."""

    def __init__(self, app: Celery, state: redis.Redis | None = None, same_redis: bool = False):
        self.app = app
        # With the broker in the state Redis, a hook's publish and its bookkeeping are one
        # transaction (see batchline/messaging/publish.py).
        self.state = state if same_redis else None
        self.fallback = state

    def send(self, name: str, args: tuple[Any, ...], countdown: float | None = None) -> None:
        # A message sent by name says whether to store the result; pipeline tasks' results
        # are never read, so none is stored.
        self.app.send_task(name, args=args, countdown=countdown, ignore_result=True)

    def send_many(self, name: str, args: Iterable[tuple[Any, ...]]) -> int:
        """Publish many messages: pushed straight onto the queue's list when the broker is
        the state Redis (batchline.messaging.publish), else through kombu's publish batch."""
        queue = ROUTES.get(TaskName(name)) if name in TASK_NAMES else None
        if self.state is not None and queue is not None:
            return push_tasks(self.state, name, queue.value, args)
        sent = 0
        with self.app.producer_or_acquire() as producer, producer.batch(max_size=PUBLISH_BATCH):
            for a in args:
                self.app.send_task(name, args=a, producer=producer, ignore_result=True)
                sent += 1
        return sent

    def send_hooks(
        self,
        hooks: Sequence[tuple[str, tuple[Any, ...], str, str | None]],
        then: Callable[[Any], None],
    ) -> None:
        """Send hook tasks (name, args, task_id, queue) and run `then(pipeline)`: in one
        transaction when the broker is the state Redis, else one after the other."""
        calls = [Hook(n, a, t, q or DEFAULT_HOOK_QUEUE) for n, a, t, q in hooks]
        if self.state is not None:
            publish_with(self.app, self.state, calls, then)
            return
        for h in calls:
            self.app.send_task(h.name, args=h.args, task_id=h.task_id, queue=h.queue)
        if self.fallback is None:
            raise RuntimeError("hooks need the state Redis for their bookkeeping")
        pipe = self.fallback.pipeline(transaction=True)
        then(pipe)
        pipe.execute()
