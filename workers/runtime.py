"""Per-process runtime: Redis, the SDK client and the pipeline context, rebuilt after fork."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
from celery import Celery, signals

from batchline import api, logs
from batchline.pipeline.context import Context
from batchline.settings import get_settings
from batchline.store import Store

PUBLISH_BATCH = 500  # publishes per pipelined round trip to Redis
DEFAULT_HOOK_QUEUE = "celery"  # Celery's default queue, where another app's worker listens

_context: Context | None = None


class CeleryDispatcher:
    """Sends pipeline tasks by name (routed to their stage queue) and hooks to their queue."""

    def __init__(self, app: Celery):
        self.app = app

    def send(self, name: str, args: tuple[Any, ...], countdown: float | None = None) -> None:
        self.app.send_task(name, args=args, countdown=countdown)

    def send_many(self, name: str, args: Iterable[tuple[Any, ...]]) -> int:
        """Publish many messages through kombu's pipelined publish batch."""
        sent = 0
        with self.app.producer_or_acquire() as producer, producer.batch(max_size=PUBLISH_BATCH):
            for a in args:
                self.app.send_task(name, args=a, producer=producer)
                sent += 1
        return sent

    def send_hook(self, name: str, args: tuple[Any, ...], task_id: str, queue: str | None) -> None:
        self.app.send_task(name, args=args, task_id=task_id, queue=queue or DEFAULT_HOOK_QUEUE)


def context() -> Context:
    """This process's pipeline context, built on first use."""
    global _context
    if _context is None:
        from workers.app import app

        settings = get_settings()
        r = redis.Redis.from_url(settings.state, health_check_interval=30)
        _context = Context(
            settings=settings,
            store=Store(r, settings),
            dispatch=CeleryDispatcher(app),
            client_factory=lambda: api.make_client(settings),
        )
    return _context


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    """A forked pool process must not share its parent's sockets."""
    global _context
    _context = None


@signals.worker_init.connect
def _setup_logging(**_: Any) -> None:
    logs.setup(get_settings())
