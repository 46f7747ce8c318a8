"""The Celery application: Redis broker and result backend, JSON only, late acks, stage queues.

Clients build an app from here to send work by name; `workers/` builds the worker's app
(with its task modules and bootsteps) from the same factory.
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery
from kombu import Queue as KombuQueue

from batchline.messaging.names import TaskName
from batchline.messaging.queues import ROUTES, Queue
from batchline.redisconn import transport_options
from batchline.settings import Settings, get_settings


def celery_config(settings: Settings) -> dict[str, object]:
    """Celery's settings, derived from Batchline's."""
    return {
        "broker_url": settings.broker,
        "result_backend": settings.result_backend,
        "broker_connection_retry_on_startup": True,
        # The Redis transport hands an unacknowledged message to another worker once
        # visibility_timeout passes. A countdown task sits unacknowledged until its ETA,
        # so every countdown stays well below this (Settings checks it), and a killed
        # worker's task comes back after at most this long.
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            "ack_emulation": settings.broker_ack_emulation,
            # With a Sentinel URL: the primary's name and the sentinels' password.
            **transport_options(settings.broker, settings),
        },
        "result_backend_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            **transport_options(settings.result_backend, settings),
        },
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "task_ignore_result": True,
        "result_expires": settings.retention_s,
        "result_extended": False,
        "task_queues": [KombuQueue(q.value, routing_key=q.value) for q in Queue],
        "task_default_queue": Queue.INGEST.value,
        "task_routes": {name.value: {"queue": q.value} for name, q in ROUTES.items()},
        "task_track_started": False,
        "worker_send_task_events": settings.task_events,
        # Flower learns of a task from the worker that receives it; a task-sent event per
        # message would double the messages of the results stage.
        "task_send_sent_event": False,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "beat_schedule": {
            "batchline-sweep": {
                "task": TaskName.SWEEP.value,
                "schedule": settings.sweep_interval_s,
            },
            # Webhook retries wait in Redis; their scheduler chain restarts itself, and this
            # picks up due retries should a chain die unnoticed.
            "batchline-webhooks": {"task": TaskName.SCHEDULE_WEBHOOKS.value, "schedule": 30.0},
            # Hands what a dead worker held to live workers (workers/heartbeat.py); a pass
            # that waited longer than its interval is dropped, the next one does its work.
            "batchline-recover": {
                "task": TaskName.RECOVER.value,
                "schedule": settings.recovery_interval_s,
                "options": {"expires": settings.recovery_interval_s},
            },
        },
        "timezone": "UTC",
        "enable_utc": True,
    }


def create_app(settings: Settings | None = None, include: Sequence[str] = ()) -> Celery:
    """A Celery app configured from Batchline's settings; `include` names the modules that
    register tasks (a worker's app), none for an app that only sends."""
    settings = settings or get_settings()
    app = Celery("batchline", include=list(include))
    app.conf.update(celery_config(settings))
    return app
