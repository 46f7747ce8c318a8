"""The worker's Celery application: the library's app with the task modules and the heartbeat.

`celery -A workers worker` and `celery -A workers beat` load this module's `app`.
"""

from __future__ import annotations

from celery import Celery

from batchline.messaging.app import create_app
from batchline.settings import Settings
from workers.heartbeat import HeartbeatStep

TASK_MODULES = [
    "tasks.submit",
    "tasks.jobs",
    "tasks.create",
    "tasks.poll",
    "tasks.results",
    "tasks.retries",
    "tasks.sweep",
    "tasks.recover",
    "tasks.events",
]


def create_worker_app(settings: Settings | None = None) -> Celery:
    """The app a worker runs: every task module registered, the heartbeat bootstep added."""
    app = create_app(settings, include=TASK_MODULES)
    app.steps["consumer"].add(HeartbeatStep)
    return app


app = create_worker_app()
