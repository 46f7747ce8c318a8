"""Publishing hook messages and dropping their marks in one Redis transaction.

A hook must reach the service once. Sending the message and then dropping the mark that says
"not sent yet" leaves a window: a worker that dies between the two leaves a mark behind, and
the hook is sent again. When the broker and Batchline's state live in the same Redis (the
default), both happen in one MULTI/EXEC: the publish is what kombu's Redis transport would
run, an LPUSH of the message onto the queue's list (the message built here from a template),
executed together with the mark's removal. The pipeline's own fan-out messages are pushed the
same way (push_tasks).
"""

from __future__ import annotations

import base64
import socket
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from celery import Celery


@dataclass(frozen=True)
class Hook:
    """One hook call: a task of the service's app, on the service's queue."""

    name: str
    args: tuple[Any, ...]
    task_id: str
    queue: str


# A protocol-2 task message as Celery's `send_task` builds it and kombu's Redis transport
# stores it (the default exchange: the routing key names the queue). Workers consume these
# unchanged; building them here skips Celery's per-message declare, `saferepr` of the
# arguments and kombu's message assembly.
ORIGIN = f"batchline@{socket.gethostname()}"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_HEADERS: dict[str, Any] = {
    "lang": "py",
    "task": "",
    "id": "",
    "shadow": None,
    "eta": None,
    "expires": None,
    "group": None,
    "group_index": None,
    "retries": 0,
    "timelimit": [None, None],
    "root_id": "",
    "parent_id": None,
    "argsrepr": "",
    "kwargsrepr": "{}",
    "origin": ORIGIN,
    "ignore_result": True,
    "replaced_task_nesting": 0,
    "stamped_headers": None,
    "stamps": {},
}
PUSH_BATCH = 1000  # messages per pipelined round trip


def envelope(
    name: str, args: Sequence[Any], task_id: str, queue: str, ignore_result: bool
) -> bytes:
    """The JSON a kombu Redis channel pushes onto `queue`'s list for this task message."""
    headers = {
        **_HEADERS,
        "task": name,
        "id": task_id,
        "root_id": task_id,
        "argsrepr": repr(tuple(args)),
        "ignore_result": ignore_result,
    }
    body = base64.b64encode(orjson.dumps([list(args), {}, _EMBED])).decode()
    return orjson.dumps(
        {
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "correlation_id": task_id,
                "reply_to": "",
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


def push_tasks(r: redis.Redis, name: str, queue: str, args: Iterable[Sequence[Any]]) -> int:
    """Put one message per argument tuple on `queue` (LPUSH, pipelined); how many."""
    sent = 0
    batch: list[bytes] = []
    pipe = r.pipeline(transaction=False)
    for a in args:
        batch.append(envelope(name, a, str(uuid.uuid4()), queue, True))
        if len(batch) >= PUSH_BATCH:
            pipe.lpush(queue, *batch)
            pipe.execute()
            sent += len(batch)
            batch = []
    if batch:
        pipe.lpush(queue, *batch)
        pipe.execute()
        sent += len(batch)
    return sent


def publish_commands(app: Celery, hooks: Sequence[Hook]) -> list[tuple[str, tuple[Any, ...]]]:
    """The Redis commands that put these task messages on their queues (not yet run)."""
    by_queue: dict[str, list[bytes]] = {}
    for hook in hooks:
        # A hook's result goes where the service's app keeps results, as send_task would.
        msg = envelope(hook.name, hook.args, hook.task_id, hook.queue, False)
        by_queue.setdefault(hook.queue, []).append(msg)
    return [("lpush", (queue, *msgs)) for queue, msgs in by_queue.items()]


def publish_with(
    app: Celery, r: redis.Redis, hooks: Sequence[Hook], then: Callable[[Any], None]
) -> None:
    """Publish the hooks and run `then(pipeline)`'s commands in one transaction on `r`."""
    pipe = r.pipeline(transaction=True)
    for name, args in publish_commands(app, hooks):
        getattr(pipe, name)(*args)
    then(pipe)
    pipe.execute()
