"""Per-process runtime: Redis, the SDK client and the pipeline context, rebuilt after fork."""

from __future__ import annotations

from typing import Any

from celery import signals

from batchline import api, logs
from batchline.messaging.dispatch import CeleryDispatcher
from batchline.messaging.names import TaskName
from batchline.messaging.queues import Queue
from batchline.pipeline.context import Context
from batchline.redisconn import connect
from batchline.settings import get_settings
from batchline.store import Store

_context: Context | None = None


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
    settings = get_settings()
    logs.setup(settings)
    # One line per state change at INFO, written by Batchline itself: Celery's received and
    # succeeded lines of Batchline's tasks are DEBUG lines (a result task's stay at INFO when
    # per-result logs are asked for).
    quiet = {t.value for t in TaskName}
    if settings.result_logs:
        quiet.discard(TaskName.PROCESS_RESULT.value)
    logs.quiet_task_lines(frozenset(quiet))


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
