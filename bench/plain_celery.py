"""The result stage done the plain Celery way: one `apply_async` per result, default settings
(or tuned the way Batchline's results workers run: `tuned=True`).

A batch of the job's requests is made on a private emulator first (not timed); then one
`plain.fan_out` task streams its results and publishes a `plain.handle` task per line. The
stage lasts from the fan-out's start to the last handle's end, like Batchline's result stage
(chunk fanout_started_at to done_at).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anthropic
from celery import Celery

from batchline import api
from batchline.devstack import EMULATOR_KEY
from bench import plain_app
from bench.jobgen import Job
from bench.memory import RssSampler
from bench.stack import stack

READ_SLICE = 1 << 20
# The tuned baseline's worker options: those of Batchline's results workers
# (batchline.devstack.RESULTS_WORKER_ARGS when the baseline was added), ack emulation off too.
TUNED_WORKER_ARGS = ("--pool", "solo", "--prefetch-multiplier", "64")


def _create_batch(base_url: str, job: Job) -> str:
    """Create one batch of the job's requests by streaming the file as the create body."""
    client = anthropic.Anthropic(base_url=base_url, api_key=EMULATOR_KEY, timeout=600)
    size = job.body_bytes

    def pieces() -> Any:
        yield b'{"requests":['
        with open(job.path, "rb") as f:
            first = True
            for line in f:
                line = line.strip()
                if line:
                    yield (b"" if first else b",") + line
                    first = False
        yield b"]}"

    batch = api.create(client, api.StreamedBody(pieces, size))
    while batch.processing_status != "ended":
        time.sleep(0.05)
        batch = client.messages.batches.retrieve(batch.id)
    if not batch.results_url:
        raise RuntimeError(f"batch {batch.id} ended without a results_url")
    return batch.results_url


def settings_label(*, result_backend: bool, tuned: bool) -> str:
    if tuned:
        return (
            "tuned like Batchline's results workers: solo pool, prefetch 64, no ack "
            "emulation, no result backend; broker Redis"
        )
    return "Celery defaults; broker Redis" + (
        "; result backend Redis" if result_backend else "; no result backend"
    )


def run(
    workdir: Path,
    job: Job,
    workers: int,
    *,
    result_backend: bool,
    tuned: bool = False,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Fan the batch's results out through plain Celery; throughput and costs.

    At Celery's defaults: one worker with `workers` prefork processes. Tuned: `workers`
    solo-pool workers with a prefetch of 64 and the transport's ack emulation off, as
    Batchline's results workers run (no result backend).
    """
    if tuned and result_backend:
        raise ValueError("the tuned baseline has no result backend")
    timeout_s = timeout_s or max(600.0, job.count / 20)
    with stack(workdir) as st:
        env = {"BENCH_PLAIN_BROKER_URL": st.redis.url, "BENCH_HANDLER": "noop"}
        if result_backend:
            env["BENCH_PLAIN_BACKEND_URL"] = st.redis.url
        if tuned:
            env["BENCH_PLAIN_ACK_EMULATION"] = "false"
            started_workers = [
                st.worker(
                    name=f"plain.tuned{i + 1}",
                    concurrency=1,
                    app="bench.plain_app",
                    extra=TUNED_WORKER_ARGS,
                    env=env,
                    wait=False,
                )
                for i in range(workers)
            ]
        else:
            started_workers = [
                st.worker(
                    name="plain", concurrency=workers, app="bench.plain_app", env=env, wait=False
                )
            ]
        # The workers start while the batch is made (it is not timed)
        results_url = _create_batch(st.emulator.base_url, job)
        st.ready()
        r = st.r()
        before = st.commandstats()
        rss = RssSampler(started_workers, st.servers())
        with rss:
            with Celery("bench", broker=st.redis.url) as sender:
                sender.send_task(plain_app.FAN_OUT, args=(results_url,))
            st.wait(
                lambda: plain_app.COUNTER.done(r) >= job.count,
                timeout_s,
                "every plain handle task",
                interval_s=0.1,
            )
        after = st.commandstats()
        started = float(r.get(plain_app.STARTED_KEY) or 0)
        _, last = plain_app.COUNTER.span(r)
        if last is None or not started:
            raise RuntimeError("the plain fan-out left no times")
        seconds = last - started
        n = job.count
        return {
            "settings": settings_label(result_backend=result_backend, tuned=tuned),
            "tuned": tuned,
            "requests": n,
            "seconds": round(seconds, 3),
            "requests_per_s": round(n / seconds, 1),
            "task_messages_per_request": round((after["lpush"] - before.get("lpush", 0)) / n, 3),
            "event_messages_per_request": round(
                (after.get("publish", 0) - before.get("publish", 0)) / n, 3
            ),
            "result_keys": sum(1 for _ in r.scan_iter("celery-task-meta-*", count=1000)),
            "worker_memory": [p for p in rss.result() if p["role"] != "server"],
            "cpu": {
                "seconds": rss.cpu_s(),
                "ms_per_request": {k: round(v * 1000 / n, 3) for k, v in rss.cpu_s().items()},
            },
        }
