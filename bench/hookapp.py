"""A service's Celery app receiving Batchline's on_result hook: runs the bench handler, counts.

Run by the harness as `celery -A bench.hookapp worker --pool threads` on its own queue; the
broker comes from BENCH_HOOK_BROKER_URL, the handler from BENCH_HANDLER (noop or io).
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery

from bench.counting import Counter
from bench.handlers import HANDLERS

QUEUE = "bench-hooks"
TASK = "benchhooks.on_result"
COUNTER = Counter("hooks")

BROKER = os.environ.get("BENCH_HOOK_BROKER_URL", "redis://127.0.0.1:6379/0")
HANDLER = HANDLERS[os.environ.get("BENCH_HANDLER", "io")]

app = Celery("benchhooks", broker=BROKER)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)
_r = redis.Redis.from_url(BROKER)


@app.task(name=TASK)
def on_result(job_id: str, custom_id: str, record: dict[str, Any]) -> None:
    started = time.time()
    HANDLER(custom_id, record)
    COUNTER.record(_r, started, time.time())
