"""Per-process runtime: Redis, the SDK client and the pipeline context, rebuilt after fork."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis
from celery import Celery, signals

from batchline import api, logs
from batchline.pipeline.context import Context
from batchline.redisconn import connect
from batchline.settings import get_settings
from batchline.store import Store
from workers.outbox import Hook, publish_with
from workers.queues import Queue

PUBLISH_BATCH = 500  # publishes per pipelined round trip to Redis
DEFAULT_HOOK_QUEUE = "celery"  # Celery's default queue, where another app's worker listens

_context: Context | None = None


class CeleryDispatcher:
    """Sends pipeline tasks by name (routed to their stage queue) and hooks to their queue."""

    def __init__(self, app: Celery, state: redis.Redis | None = None, same_redis: bool = False):
        self.app = app
        # With the broker in the state Redis, a hook's publish and its bookkeeping are one
        # transaction (see workers/outbox.py).
        self.state = state if same_redis else None
        self.fallback = state

    def send(self, name: str, args: tuple[Any, ...], countdown: float | None = None) -> None:
        # A message sent by name says whether to store the result; pipeline tasks' results
        # are never read, so none is stored.
        self.app.send_task(name, args=args, countdown=countdown, ignore_result=True)

    def send_many(self, name: str, args: Iterable[tuple[Any, ...]]) -> int:
        """Publish many messages through kombu's pipelined publish batch."""
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


def context() -> Context:
    """This process's pipeline context, built on first use."""
    global _context
    if _context is None:
        from workers.app import app

        settings = get_settings()
        r = connect(settings.state, settings, health_check_interval=30)
        _context = Context(
            settings=settings,
            store=Store(r, settings),
            dispatch=CeleryDispatcher(app, r, same_redis=settings.broker == settings.state),
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


@signals.celeryd_after_setup.connect
def _check_ack_emulation(instance: Any = None, **_: Any) -> None:
    """Without ack emulation a killed worker loses the messages it held; only the results
    stage is built to recover those (the recovery pass publishes its results again): warn on
    any other queue."""
    if instance is None or get_settings().broker_ack_emulation:
        return
    queues = set(instance.app.amqp.queues.consume_from or instance.app.amqp.queues)
    others = sorted(queues - {Queue.RESULTS.value})
    if others:
        logs.warning(
            "worker.ack_emulation_off",
            detail="BATCHLINE_BROKER_ACK_EMULATION=false is meant for results-only workers; "
            "a message of these queues held by a killed worker may be lost",
            queues=",".join(others),
        )


@signals.celeryd_after_setup.connect
def _preload_the_sdk(instance: Any = None, **_: Any) -> None:
    """A worker that calls the API (the api queue) or validates input (ingest) imports the
    SDK once in its main process, before the pool forks, so no pool process pays for it
    again; a results or events worker never imports it (over a second of CPU at start)."""
    if instance is None:
        return
    queues = set(instance.app.amqp.queues.consume_from or instance.app.amqp.queues)
    if queues & {Queue.API.value, Queue.INGEST.value}:
        import anthropic.types.messages  # noqa: F401

        from batchline.validation import known_params

        known_params()
