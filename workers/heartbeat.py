"""Worker liveness: a consumer bootstep whose thread writes this worker's heartbeat to Redis,
with every message the worker holds (reserved, running, waiting for a countdown).

The heartbeat runs on a thread of the worker's main process, not on its event loop: a solo
pool runs each task on the event loop, and a long task (a group of results whose handler
waits on a slow service) would otherwise silence a live worker. The same thread sends
Celery's worker-heartbeat event (what Flower and `celery events` read) on a connection of its
own, so Flower never shows a busy worker offline. The messages held are read from the task
consumer's channel (kombu's virtual QoS `_delivered`, minus what was acknowledged since).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from typing import Any

import orjson
import redis
from celery import bootsteps, signals
from celery.utils.sysinfo import load_average
from celery.worker.state import SOFTWARE_INFO, active_requests, all_total_count

from batchline import lease, logs
from batchline.liveness import (
    RUNNING,
    STOPPING,
    Held,
    LivenessKeys,
    held_ids,
    write_heartbeat,
    write_stopped,
)
from batchline.redisconn import connect
from batchline.settings import Settings, get_settings

# One failed heartbeat is logged; then one in this many, until they succeed again.
LOG_EVERY = 12
# The worker-heartbeat event (Flower): sent this often from the heartbeat thread, with
# Celery's default heartbeat `freq` (a watcher waits 2 x freq before calling a worker gone).
ANNOUNCE_EVERY_S = 1.0
ANNOUNCE_FREQ_S = 2.0


class Heartbeat:
    """This worker's heartbeat thread and what it reports."""

    def __init__(self, settings: Settings, node: str, queues: list[str], ack_emulation: bool):
        self.settings = settings
        self.node = node
        self.worker_id = f"{node}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.keys = LivenessKeys(settings.key_prefix)
        self.r = connect(
            settings.state, settings, socket_timeout=max(1.0, settings.worker_heartbeat_s)
        )
        self.fields: dict[str, Any] = {
            "node": node,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "queues": ",".join(sorted(queues)),
            "ack_emulation": "1" if ack_emulation else "0",
            "started_at": time.time(),
            "state": RUNNING,
        }
        self.consumer: Any = None
        self._described: dict[str, Held] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._events: Any = None  # the event dispatcher of this thread, made when first used

    @property
    def holder(self) -> lease.Holder:
        return lease.Holder(self.keys.alive(self.worker_id), self.keys.report(self.worker_id))

    # --- what the worker holds ---

    def held(self) -> list[Held] | None:
        """The messages this worker's task consumer holds; None while it has no channel."""
        task_consumer = getattr(self.consumer, "task_consumer", None)
        channel = getattr(task_consumer, "channel", None)
        qos = getattr(channel, "_qos", None) if channel is not None else None
        if channel is None:
            return None
        if qos is None:
            return []
        for _ in range(5):
            try:
                # Read on this thread while the event loop appends and acknowledges: copy
                # first, retry if the dict changed under the copy.
                delivered = list(qos._delivered.items())
                acked = set(qos._dirty)
                break
            except RuntimeError:
                continue
        else:
            return None
        out = [self._describe(str(tag), msg) for tag, msg in delivered if tag not in acked]
        keep = {h.tag for h in out}
        for tag in [t for t in self._described if t not in keep]:
            del self._described[tag]
        return out

    def _describe(self, tag: str, message: Any) -> Held:
        known = self._described.get(tag)
        if known is not None:
            return known
        headers = getattr(message, "headers", None) or {}
        task = str(headers.get("task") or "")
        try:
            job_id, chunk = held_ids(orjson.loads(message.body)[0])
        except (orjson.JSONDecodeError, TypeError, IndexError, KeyError, AttributeError):
            job_id, chunk = None, None
        held = Held(tag, task, job_id, chunk)
        self._described[tag] = held
        return held

    # --- writing ---

    def beat(self) -> None:
        held = self.held()
        write_heartbeat(
            self.r,
            self.keys,
            self.worker_id,
            self.fields,
            self.settings.worker_dead_after_s,
            held,
        )

    def announce(self) -> None:
        """Celery's worker-heartbeat event, as the worker's own (loop-driven) heart sends it,
        from this thread, every ANNOUNCE_EVERY_S: a worker whose loop is busy still shows
        online. Watchers (Flower) call a worker gone two `freq` after its last heartbeat, the
        loop's own heart's included; this thread's comes well within that."""
        if not self.settings.task_events or self.fields["state"] == STOPPING:
            return
        app = getattr(self.consumer, "app", None)
        if app is None:
            return
        if self._events is None:
            self._events = app.events.Dispatcher(
                app.connection_for_write(), hostname=self.node, enabled=True
            )
        self._events.send(
            "worker-heartbeat",
            freq=ANNOUNCE_FREQ_S,
            active=len(active_requests),
            processed=all_total_count[0],
            loadavg=load_average(),
            **SOFTWARE_INFO,
        )

    def start(self) -> None:
        """The first heartbeat now (before any message is taken), then a thread."""
        self.beat()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="batchline-heartbeat", daemon=True
            )
            self._thread.start()
        logs.event("worker.heartbeat_started", worker=self.node, worker_id=self.worker_id)

    def _run(self) -> None:
        next_beat = time.monotonic() + self.settings.worker_heartbeat_s
        while not self._stop.is_set():
            wait = min(ANNOUNCE_EVERY_S, max(0.0, next_beat - time.monotonic()))
            woken = self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            if woken or time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.settings.worker_heartbeat_s
                try:
                    self.beat()
                    self._failures = 0
                except Exception as exc:  # the thread must outlive a Redis blip
                    if self._failures % LOG_EVERY == 0:
                        logs.warning("worker.heartbeat_failed", worker=self.node, error=str(exc))
                    self._failures += 1
            try:
                self.announce()
            except Exception:  # the broker is away: the next announcement connects again
                self._drop_events()

    def stopping(self) -> None:
        """Warm shutdown began: say so at once (steps that can hand over stop renewing)."""
        self.fields["state"] = STOPPING
        self._wake.set()

    def stopped(self) -> None:
        """The worker has finished its tasks and given back what it held: say goodbye."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, self.settings.worker_heartbeat_s))
        self._drop_events()

    def _drop_events(self) -> None:
        events, self._events = self._events, None
        if events is not None:
            with contextlib.suppress(Exception):
                events.close()
                events.connection.release()
        try:
            write_stopped(self.r, self.keys, self.worker_id)
        except redis.RedisError as exc:
            logs.warning("worker.goodbye_failed", worker=self.node, error=str(exc))


_heartbeat: Heartbeat | None = None


class HeartbeatStep(bootsteps.StartStopStep):
    """Consumer bootstep: starts the heartbeat once the task consumer exists."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        if _heartbeat is None:
            return
        _heartbeat.consumer = c
        _heartbeat.start()


@signals.celeryd_after_setup.connect
def _register(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """Before the pool forks: name this worker in every lease its processes take."""
    global _heartbeat
    if instance is None:
        return
    settings = get_settings()
    queues = list(instance.app.amqp.queues.consume_from or instance.app.amqp.queues)
    _heartbeat = Heartbeat(settings, str(sender), queues, settings.broker_ack_emulation)
    lease.set_holder(_heartbeat.holder)


@signals.worker_shutting_down.connect
def _shutting_down(**_: Any) -> None:
    # Called from the signal handler: no I/O here, the thread writes.
    if _heartbeat is not None:
        _heartbeat.stopping()


@signals.worker_shutdown.connect
def _shutdown(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stopped()
