"""`batchline.fan_out_results` and one `batchline.process_result` per custom_id.

Every custom_id keeps its own `process_result` message (job_id, chunk, batch_id, custom_id);
a worker hands consecutive ones to one grouped call (celery-batches), flushed by count
(Settings.result_group_size, at most the worker's prefetch) and by time
(result_group_wait_ms). A message is acknowledged only once its result is recorded, or once
a fresh message for a result that failed is on the queue: a worker killed mid-group leaves
the group's messages unacknowledged (restored, or republished by recovery and the sweep).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

import redis
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

from batchline import logs
from batchline.messaging.names import TaskName
from batchline.pipeline import results
from batchline.pipeline.context import Defer
from batchline.settings import get_settings
from tasks.base import PipelineTask
from workers.app import app
from workers.runtime import context

SETTINGS = get_settings()
# Task events (Flower) are sent per task by Celery's own consumer: with them asked for, the
# result tasks run one by one.
GROUPED = SETTINGS.result_group_size > 1 and not SETTINGS.result_task_events
RETRY_MAX_S = 60.0
FANOUT_THREADS = 4  # batches a results worker fans out at once
# Celery's own line for a task that succeeded, kept per result where per-result logs are on.
TRACE_LOG = logging.getLogger("celery.app.trace")


class StageEvents:
    """Task events (what Flower shows) for work Celery's own request handling does not run:
    a fan-out on its own thread, a group of results. Sent from the worker's event loop (the
    dispatcher is not thread-safe), when the worker sends task events at all."""

    def __init__(self, consumer: Any):
        self.consumer = consumer

    def _send(self, kind: str, **fields: Any) -> None:
        dispatcher = getattr(self.consumer, "event_dispatcher", None)
        if dispatcher is None or not dispatcher.enabled:
            return

        def send() -> None:
            try:
                dispatcher.send(kind, **fields)
            except Exception as exc:  # an event must never cost a result
                logs.warning("results.task_event_unsent", event=kind, error=str(exc)[:200])

        self.consumer.call_soon(send)

    def started(self, task_id: str, name: str, args: str, kwargs: str = "{}") -> None:
        fields = {"root_id": None, "parent_id": None, "retries": 0, "eta": None, "expires": None}
        self._send("task-received", uuid=task_id, name=name, args=args, kwargs=kwargs, **fields)
        self._send("task-started", uuid=task_id)

    def succeeded(self, task_id: str, result: str, runtime: float) -> None:
        self._send("task-succeeded", uuid=task_id, result=result, runtime=runtime)

    def failed(self, task_id: str, error: str) -> None:
        self._send("task-failed", uuid=task_id, exception=error, traceback="")


class FanOutTask(PipelineTask):
    """On a solo-pool worker (the results workers), fan-outs run on threads of their own, so
    streaming a large batch never holds up the grouped result processing, and several
    batches fan out at once. Each message is acknowledged when its fan-out ends (a killed
    worker leaves it unacknowledged, and its lease lets the next run resume)."""

    abstract = True

    def start_strategy(self, app: Any, consumer: Any, **kwargs: Any) -> Any:
        if type(consumer.pool).__module__ != "celery.concurrency.solo":
            return super().start_strategy(app, consumer, **kwargs)
        return _FanOutThreads(self, consumer).handle


class _FanOutThreads:
    def __init__(self, task: FanOutTask, consumer: Any):
        self.task = task
        self.consumer = consumer
        self.events = StageEvents(consumer)
        self.jobs: queue.SimpleQueue[tuple[list[Any], Any, Any, str]] = queue.SimpleQueue()
        for i in range(FANOUT_THREADS):
            threading.Thread(target=self._serve, name=f"fan-out-{i}", daemon=True).start()

    def handle(self, message: Any, body: Any, ack: Any, reject: Any, *_: Any, **__: Any) -> None:
        args = list(message.decode()[0]) if body is None else list(body["args"])
        headers = message.headers or {}
        job = (args, ack, reject, str(headers.get("id") or ""))
        delay = _seconds_until(headers.get("eta"))
        if delay > 0:  # a deferred fan-out: queued for its threads when due
            self.consumer.timer.call_after(delay, self.jobs.put, (job,))
        else:
            self.jobs.put(job)

    def _serve(self) -> None:
        while True:
            args, ack, reject, task_id = self.jobs.get()
            try:
                settled = self._run(args, task_id)
            except Exception as exc:  # never let a thread die
                logs.warning("results.fan_out_failed", error=str(exc)[:300])
                settled = True
            (ack if settled else reject)(TRACE_LOG, self.consumer.connection_errors)

    def _run(self, args: list[Any], task_id: str) -> bool:
        """Run one fan-out; True when its message can be acknowledged."""
        started = time.monotonic()
        name = self.task.name
        task_id = task_id or uuid.uuid4().hex
        self.events.started(task_id, name, repr(tuple(args)))
        try:
            ctx = context()
            results.fan_out_results(ctx, *args)
        except Defer as d:
            delay = min(d.delay_s, SETTINGS.max_countdown_s)
            outcome = f"sent again in {delay:g}s: {d.reason}"
            settled = _send_again(name, args, delay, d.reason)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            outcome = f"sent again in 1s: {exc}"
            settled = _send_again(name, args, 1.0, str(exc))
        except Exception as exc:
            TRACE_LOG.exception("Task %s[%s] raised", name, task_id)
            self.events.failed(task_id, repr(exc)[:500])
            return True  # acknowledged on failure, as every Batchline task is
        else:
            outcome, settled = "None", True
        took = round(time.monotonic() - started, 4)
        self.events.succeeded(task_id, outcome, took)
        # As Celery's own line for a task (a DEBUG line: results.fanned_out tells the change).
        TRACE_LOG.debug("Task %s[%s] succeeded in %ss: %s", name, task_id, took, outcome)
        return settled


def _seconds_until(eta: Any) -> float:
    if not eta:
        return 0.0
    try:
        when = datetime.fromisoformat(str(eta))
    except ValueError:
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _send_again(name: str, args: list[Any], delay: float, reason: str) -> bool:
    """The fan-out again after `delay` (what a task's countdown retry does)."""
    try:
        if len(args) >= 2:
            context().store.touch_chunk(args[0], args[1], due_at=time.time() + delay)
        app.send_task(name, args=tuple(args), countdown=delay, ignore_result=True)
    except (redis.exceptions.RedisError, OSError) as exc:
        logs.warning("results.fan_out_unsent", error=str(exc)[:200])
        return False  # handed back to the broker
    logs.event(
        "task.deferred",
        level=logging.DEBUG,
        task=name,
        delay_s=round(delay, 3),
        reason=reason,
        job_id=args[0] if args else None,
    )
    return True


@app.task(name=TaskName.FAN_OUT_RESULTS.value, base=FanOutTask, bind=True)
def fan_out_results(self: PipelineTask, job_id: str, chunk: int, batch_id: str) -> None:
    self.step(results.fan_out_results, job_id, chunk, batch_id)


class ResultGroup(Batches):
    """process_result messages buffered in the consumer and handed over as a list."""

    abstract = True
    ignore_result = True
    flush_every = SETTINGS.result_group_size
    flush_interval = SETTINGS.result_group_wait_ms / 1000

    def Strategy(self, task: Any, app: Any, consumer: Any) -> Callable[..., None]:
        handle = super().Strategy(task, app, consumer)
        self._consumer = consumer
        self._events = StageEvents(consumer)

        def handler(message: Any, *args: Any, **kwargs: Any) -> None:
            qos = getattr(consumer, "qos", None)
            if qos is not None and (message.headers or {}).get("eta"):
                # A countdown waits in the buffer without using up the prefetch (as
                # Celery's own strategy does); given back when its group runs.
                qos.increment_eventually()
            handle(message, *args, **kwargs)
            # Never wait on a group the prefetch cannot fill: flush when the buffer holds
            # every message the broker will hand over before something is acknowledged.
            limit = int(qos.value) if qos is not None else 0
            if limit and 0 < limit < self.flush_every and self._buffer.qsize() >= limit:
                self._do_flush()

        return handler

    def flush(self, requests: Collection[Any]) -> Any:
        """Run the group; acknowledge each message once its result is recorded or a fresh
        message for it is queued. A group that could not secure a message hands it back."""
        simple = [SimpleRequest.from_request(r) for r in requests]
        qos = getattr(getattr(self, "_consumer", None), "qos", None)
        if qos is not None:
            for r in requests:
                if r.eta:
                    qos.decrement_eventually()
        started = time.monotonic()
        # One task in Flower per group: its jobs as arguments, its size in kwargs.
        group_id = uuid.uuid4().hex
        events: StageEvents | None = getattr(self, "_events", None)
        if events is not None:
            jobs = tuple(dict.fromkeys(str(r.args[0]) for r in simple if r.args))
            events.started(group_id, self.name, repr(jobs), repr({"results": len(simple)}))

        def on_return(unsettled: Any) -> None:
            keep = set(unsettled) if isinstance(unsettled, (list, set, tuple)) else None
            if events is not None:
                back = len(requests) if keep is None else len(keep)
                result = f"{len(requests) - back} recorded, {back} handed back"
                events.succeeded(group_id, result, round(time.monotonic() - started, 4))
            for req in requests:
                if keep is None or req.id in keep:
                    # Not processed, not retried (the group itself failed): the message goes
                    # back to the queue (with ack emulation; else recovery republishes it).
                    req.reject(requeue=True)
                else:
                    req.acknowledge()
            if SETTINGS.result_logs and keep is not None and TRACE_LOG.isEnabledFor(logging.INFO):
                took = time.monotonic() - started
                for req in requests:
                    if req.id not in keep:
                        TRACE_LOG.info(
                            "Task %s[%s] succeeded in %ss: None", req.name, req.id, round(took, 4)
                        )

        return self._pool.apply_async(
            apply_batches_task, (self, (simple,), 0, None), callback=on_return
        )


def process_group(requests: list[SimpleRequest]) -> list[str]:
    """Record a group of results; the ids of the messages left unsettled (to hand back)."""
    ctx = context()
    refs: dict[str, results.ResultRef] = {}
    for req in requests:
        job_id, chunk, batch_id, custom_id = req.args
        refs[req.id] = (job_id, int(chunk), batch_id, custom_id)
    try:
        failed = set(results.process_results(ctx, list(refs.values())))
    except Exception as exc:  # (process_results isolates failures; this is the backstop)
        logs.warning("results.group_failed", results=len(refs), error=str(exc)[:300])
        failed = set(refs.values())
    unsettled: list[str] = []
    for req in requests:
        if refs[req.id] in failed and not _retry(req):
            unsettled.append(req.id)
    return unsettled


def _retry(req: SimpleRequest) -> bool:
    """Queue a fresh process_result for a result that failed, after a backoff; True once
    it is queued (the failed message can then be acknowledged)."""
    headers = req.request_dict or {}
    retries = int(headers.get("retries") or 0) + 1
    delay = min(RETRY_MAX_S, 0.5 * 2 ** min(retries, 10))
    try:
        app.send_task(
            TaskName.PROCESS_RESULT.value,
            args=tuple(req.args),
            countdown=delay,
            retries=retries,
            ignore_result=True,
        )
    except (redis.exceptions.RedisError, OSError) as exc:
        logs.warning("results.retry_unsent", custom_id=req.args[3], error=str(exc)[:200])
        return False
    return True


if GROUPED:

    @app.task(name=TaskName.PROCESS_RESULT.value, base=ResultGroup)
    def process_result(requests: list[SimpleRequest]) -> list[str]:
        return process_group(requests)

else:
    # One per custom_id: worker events (task-received, task-succeeded) for these would
    # triple the messages per request, so they are off unless BATCHLINE_RESULT_TASK_EVENTS
    # asks for them; Flower sees the results stage through fan_out_results either way.
    @app.task(
        name=TaskName.PROCESS_RESULT.value,
        base=PipelineTask,
        bind=True,
        send_events=SETTINGS.result_task_events,
    )
    def process_result(
        self: PipelineTask, job_id: str, chunk: int, batch_id: str, custom_id: str
    ) -> None:
        self.step(results.process_result, job_id, chunk, batch_id, custom_id)
