"""Another service's Celery app: receives Batchline's on_result and on_complete hooks."""

from __future__ import annotations

import os
from typing import Any

import orjson
import redis
from celery import Celery

BROKER = os.environ.get("HOOK_BROKER_URL", "redis://127.0.0.1:6379/0")
app = Celery("hookapp", broker=BROKER)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    worker_hijack_root_logger=False,
)
_r = redis.Redis.from_url(BROKER)


@app.task(name="hookapp.on_result", bind=True)
def on_result(self: Any, job_id: str, custom_id: str, record: dict[str, Any]) -> None:
    _r.rpush(
        f"hooks:{job_id}:results",
        orjson.dumps(
            {"custom_id": custom_id, "state": record["state"], "task_id": self.request.id}
        ),
    )


@app.task(name="hookapp.on_complete", bind=True)
def on_complete(self: Any, job_id: str, summary: dict[str, Any]) -> None:
    _r.rpush(
        f"hooks:{job_id}:complete",
        orjson.dumps({"state": summary["state"], "counts": summary["counts"]}),
    )
