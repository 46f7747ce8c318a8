"""Plain Celery at its default settings, fanning a batch's results out one `apply_async` each.

The baseline for per-custom_id subtasks: `fan_out` reads the results JSONL (with the same raw
line reader Batchline uses, so only the Celery side differs) and publishes one `handle` task
per result, carrying the result; `handle` calls the bench handler and counts itself done.
Broker from BENCH_PLAIN_BROKER_URL; a result backend only when BENCH_PLAIN_BACKEND_URL is set;
BENCH_PLAIN_ACK_EMULATION=false turns the Redis transport's ack emulation off (the tuned
baseline, run like Batchline's results workers: solo pool, prefetch 64, no result backend).
"""

from __future__ import annotations

import os
import time
from typing import Any

import anthropic
import orjson
import redis
from celery import Celery

from batchline import api
from bench.counting import Counter
from bench.handlers import HANDLERS

COUNTER = Counter("plain")
FAN_OUT = "plain.fan_out"
STARTED_KEY = "bench:plain:fan_out_started"

BROKER = os.environ.get("BENCH_PLAIN_BROKER_URL", "redis://127.0.0.1:6379/0")
BACKEND = os.environ.get("BENCH_PLAIN_BACKEND_URL") or None
HANDLER = HANDLERS[os.environ.get("BENCH_HANDLER", "noop")]
ACK_EMULATION = os.environ.get("BENCH_PLAIN_ACK_EMULATION", "true").lower() != "false"

# Nothing but the broker (and, in one variant, the result backend; in the tuned one, no ack
# emulation): every other setting is Celery's default.
app = Celery("plain", broker=BROKER, backend=BACKEND)
if not ACK_EMULATION:
    app.conf.broker_transport_options = {"ack_emulation": False}
_r = redis.Redis.from_url(BROKER)


@app.task(name=FAN_OUT)
def fan_out(results_url: str) -> int:
    _r.set(STARTED_KEY, time.time())
    client = anthropic.Anthropic(max_retries=0)
    sent = 0
    for line in api.results_lines(client, results_url):
        result = orjson.loads(line)
        handle.apply_async(args=(result["custom_id"], result["result"]))
        sent += 1
    return sent


@app.task(name="plain.handle")
def handle(custom_id: str, result: dict[str, Any]) -> None:
    started = time.time()
    HANDLER(custom_id, result)
    COUNTER.record(_r, started, time.time())
