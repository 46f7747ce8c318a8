"""Publishing hook messages and dropping their marks in one Redis transaction.

A hook must reach the service once. Sending the message and then dropping the mark that says
"not sent yet" leaves a window: a worker that dies between the two leaves a mark behind, and
the hook is sent again. When the broker and Batchline's state live in the same Redis (the
default), both happen in one MULTI/EXEC: kombu's Redis transport hands over the commands it
would run for the publish (the publish-batch protocol of kombu 5.7), and they are executed
together with the mark's removal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from kombu.serialization import dumps as serialize


@dataclass(frozen=True)
class Hook:
    """One hook call: a task of the service's app, on the service's queue."""

    name: str
    args: tuple[Any, ...]
    task_id: str
    queue: str


class _Commands:
    """Collects the Redis commands kombu's Redis channel issues for one publish."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, tuple[Any, ...]]] = []

    def add(self, name: str, *args: Any) -> None:
        self.commands.append((name, args))


def publish_commands(app: Celery, hooks: Sequence[Hook]) -> list[tuple[str, tuple[Any, ...]]]:
    """The Redis commands that put these task messages on their queues (not yet run)."""
    collected = _Commands()
    with app.pool.acquire(block=True) as conn:
        channel = conn.default_channel
        for hook in hooks:
            msg = app.amqp.as_task_v2(hook.task_id, hook.name, args=hook.args, kwargs={})
            content_type, encoding, body = serialize(msg.body, serializer="json")
            message = channel.prepare_message(
                body, 0, content_type, encoding, msg.headers, msg.properties
            )
            # The default exchange: the routing key names the queue the message goes to.
            channel.basic_publish(
                message, exchange="", routing_key=hook.queue, _publish_batch=collected
            )
    return collected.commands


def publish_with(
    app: Celery, r: redis.Redis, hooks: Sequence[Hook], then: Callable[[Any], None]
) -> None:
    """Publish the hooks and run `then(pipeline)`'s commands in one transaction on `r`."""
    pipe = r.pipeline(transaction=True)
    for name, args in publish_commands(app, hooks):
        getattr(pipe, name)(*args)
    then(pipe)
    pipe.execute()
