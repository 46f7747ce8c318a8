"""Batchline end to end on a private stack: stage times from chunk metadata, worker memory,
Redis memory per request in flight, Celery messages per request and API calls per batch.

With the no-op handler the job has no hook: its result stage is `process_result` itself
(classify, record once, count). With the 10 ms handler either the job's `on_result` hook is a
task of a bench-only Celery app (bench.hookapp) run with a threads pool on its own queue
(`io`), or the job's in-process handler (the job option `handler`) is bench.handlers.sleep10,
run by the results workers themselves (`inprocess`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import redis

from batchline.client import Client
from batchline.devstack import RESULTS_WORKER_ARGS, RESULTS_WORKER_ENV
from batchline.ingest import request_blob
from batchline.settings import Settings
from batchline.store import FINAL_JOB_STATES, Chunk
from batchline.validation import Request, validate_stream
from bench import handlers, hookapp
from bench.counting import Counter
from bench.jobgen import Job
from bench.memory import RedisMemorySampler, RssSampler
from bench.stack import Stack, close_client, stack

IN_FLIGHT = "in_flight"
RESULTS = "results"  # a batch has ended: its results are being fanned out and processed
SIZE_SAMPLE = 2000
# Threads of the hook worker: enough that 10 ms waits overlap; the CPU is the limit then.
HOOK_THREADS = 100
# How the bench deploys Batchline (README, Operations):
#   split:   one prefork worker for ingest, api and events; `workers` results workers as
#            the README deploys them (batchline.devstack.RESULTS_WORKER_ARGS and _ENV);
#   prefork: one `celery -A workers worker` with `workers` pool processes on every queue.
TOPOLOGIES = ("split", "prefork")
# The job option naming an in-process handler (batchline.options.JobOptions).
HANDLER_OPTION = "handler"
HANDLER_NOT_AVAILABLE = "handler option not available"


def handler_option_available() -> bool:
    """True when this Batchline takes an in-process handler per job."""
    import importlib.util

    from batchline.options import JobOptions

    return HANDLER_OPTION in JobOptions.names() and (
        importlib.util.find_spec("batchline.handlers") is not None
    )


def stored_request_bytes(job: Job, sample: int = SIZE_SAMPLE) -> float:
    """Average size of a request as Batchline stores it (batchline.ingest.request_blob)."""
    sizes = []
    with open(job.path, "rb") as f:
        items = ((i + 1, line) for i, line in zip(range(sample), f, strict=False))
        for req in validate_stream(items, {}, 1 << 25):
            if isinstance(req, Request):
                sizes.append(len(request_blob(req)))
    return sum(sizes) / len(sizes) if sizes else 0.0


def _job_phase(client: Client, job_id: str) -> str:
    """in_flight: the job's requests are stored and none of its batches has ended yet."""
    state = client.store.job_state(job_id)
    if state not in ("pending", "running"):
        return state or "absent"
    chunks = client.store.chunks(job_id)
    if chunks and all(c.state in ("pending", "creating", "in_progress") for c in chunks):
        return IN_FLIGHT
    if any(c.state == "ended" for c in chunks):
        return RESULTS
    return "other"


class QueueProbe:
    """The results queue's longest length and the size of one process_result message."""

    def __init__(self, r: redis.Redis, queue: str = "results"):
        self.r = r
        self.queue = queue
        self.max_length = 0
        self.message_bytes: int | None = None

    def __call__(self) -> None:
        length = int(self.r.llen(self.queue))
        self.max_length = max(self.max_length, length)
        if self.message_bytes is None and length:
            raw = self.r.lindex(self.queue, -1)
            if raw and b"batchline.process_result" in raw:
                self.message_bytes = len(raw)


def _span(chunks: list[Chunk], start: str, end: str) -> float | None:
    starts = [c.time_field(start) for c in chunks if c.fields.get(start)]
    ends = [c.time_field(end) for c in chunks if c.fields.get(end)]
    if not starts or not ends:
        return None
    return max(ends) - min(starts)


def _per(value: int | None, base: int, n: int) -> float | None:
    return round((value - base) / n, 1) if value is not None else None


def _stage(seconds: float | None, count: int) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 3) if seconds is not None else None,
        "requests_per_s": round(count / seconds, 1) if seconds else None,
    }


def start_batchline(st: Stack, workers: int, topology: str, wait: bool = True) -> None:
    """Batchline's workers, all named batchline.*@ (their CPU is summed as `batchline`).
    They start side by side; with wait=False the caller waits for them (`st.ready()`)."""
    _start(st, workers, topology)
    if wait:
        st.ready()


def _start(st: Stack, workers: int, topology: str) -> None:
    if topology == "prefork":
        st.worker(name="batchline.all", concurrency=workers, wait=False)
        return
    if topology != "split":
        raise ValueError(f"unknown topology {topology!r}; choose from {', '.join(TOPOLOGIES)}")
    st.worker(
        name="batchline.stages", concurrency=1, queues=["ingest", "api", "events"], wait=False
    )
    for i in range(workers):
        st.worker(
            name=f"batchline.results{i + 1}",
            concurrency=1,
            queues=["results"],
            extra=RESULTS_WORKER_ARGS,
            env=RESULTS_WORKER_ENV,
            wait=False,
        )


def run(
    workdir: Path,
    job: Job,
    workers: int,
    handler: str = "noop",
    timeout_s: float | None = None,
    topology: str = "split",
    **settings: Any,
) -> dict[str, Any]:
    """One job of `job.count` requests through Batchline; numbers of every stage. `settings`
    are Batchline settings for the whole stack (task_events=False, say)."""
    return run_each(workdir, job, workers, (handler,), timeout_s, topology, **settings)[handler]


def run_each(
    workdir: Path,
    job: Job,
    workers: int,
    handler_runs: tuple[str, ...],
    timeout_s: float | None = None,
    topology: str = "split",
    **settings: Any,
) -> dict[str, dict[str, Any]]:
    """The job once per handler (noop, io: the hook, inprocess), one after the other on one
    stack (its start-up paid once); each job's numbers are its own (job ids, counters and
    samplers apart). The hooks worker, when a run needs it, is there for every run. A job
    after the first finds the workers warm (the first fan-out on fresh workers takes seconds
    longer), so the harness gives each measured run its own stack."""
    timeout_s = timeout_s or max(600.0, job.count / 20)
    with stack(workdir, **settings) as st:
        start_batchline(st, workers, topology, wait=False)
        if "io" in handler_runs:
            st.worker(
                name="hooks",
                concurrency=HOOK_THREADS,
                app="bench.hookapp",
                queues=[hookapp.QUEUE],
                extra=("--pool", "threads"),
                env={"BENCH_HOOK_BROKER_URL": st.redis.url, "BENCH_HANDLER": "io"},
                wait=False,
            )
        st.ready()
        out = {}
        for handler in handler_runs:
            options: dict[str, Any] = {}
            counter: Counter | None = None
            if handler == "inprocess":
                options = {HANDLER_OPTION: handlers.SLEEP10}
                counter = handlers.INPROCESS_COUNTER
            elif handler == "io":
                options = {"on_result": hookapp.TASK, "hook_queue": hookapp.QUEUE}
                counter = hookapp.COUNTER
            elif handler != "noop":
                raise ValueError(f"unknown handler run {handler!r}")
            out[handler] = {
                "topology": topology,
                **_measure(st, job, handler, options, counter, timeout_s),
            }
        return out


def _measure(
    st: Stack,
    job: Job,
    handler: str,
    options: dict[str, Any],
    counter: Counter | None,
    timeout_s: float,
) -> dict[str, Any]:
    client = Client(Settings(redis_url=st.redis.url))
    r = st.r()
    job_id = f"bench-{handler}"
    stats_before = st.commandstats()
    memory_before = st.used_memory()
    rss = RssSampler(st.workers, st.servers())
    queue = QueueProbe(st.r())
    redis_mem = RedisMemorySampler(
        st.used_memory, lambda: _job_phase(client, job_id), queue, cpu=st.redis_cpu_s
    )
    with rss, redis_mem:
        t0 = time.time()
        client.submit(job.path, job_id=job_id, timeout_s=timeout_s, **options)
        t_submitted = time.time()
        st.wait(
            lambda: client.store.job_state(job_id) in FINAL_JOB_STATES,
            timeout_s,
            f"job {job_id} to complete",
            interval_s=0.1,
        )
        if counter is not None:
            st.wait(
                lambda: counter.done(r) >= job.count,
                timeout_s,
                f"every {handler} handler call to end",
                interval_s=0.1,
            )
    status = client.status(job_id)
    fields = client.store.job_fields(job_id)
    chunks = [c for c in client.store.chunks(job_id) if c.fields.get("kind") == "first"]
    stats_after = st.commandstats()
    emu = st.emulator.stats()
    close_client(client)
    n = job.count

    job_created = float(fields["created_at"])
    job_ended = float(fields["ended_at"])
    made = max(c.time_field("made_at") for c in chunks)
    stages = {
        "upload": _stage(job_created - t0, n),
        "validate_chunk": _stage(made - job_created, n),
        "create": _stage(_span(chunks, "intent_at", "created_at"), n),
        "poll_to_ended": _stage(_span(chunks, "ended_at", "seen_ended_at"), n),
        "fan_out": _stage(_span(chunks, "fanout_started_at", "fanout_done_at"), n),
        "result_processing": _stage(_span(chunks, "fanout_started_at", "done_at"), n),
    }
    end_to_end = job_ended - t0
    out: dict[str, Any] = {
        "handler": handler,
        "result_stage": {
            "io": "on_result hook task (bench.hookapp, threads pool)",
            "inprocess": "in-process handler (bench.handlers.sleep10) on the results workers",
        }.get(handler, "process_result itself (no hook)"),
        "requests": n,
        "batches": len(chunks),
        "counts": status["counts"],
        "submit_call_s": round(t_submitted - t0, 3),
        "stages": stages,
    }
    if counter is not None:
        first, last = counter.span(r)
        if first is None or last is None:
            raise RuntimeError(f"the {handler} handler counter has no times")
        stages["hooks"] = _stage(last - first, n)
        end_to_end = max(end_to_end, last - t0)
    out["end_to_end"] = _stage(end_to_end, n)

    def delta(cmd: str) -> int:
        return stats_after.get(cmd, 0) - stats_before.get(cmd, 0)

    results_stored = sum(1 for _ in r.scan_iter("celery-task-meta-*", count=1000))
    events = delta("publish") - results_stored
    out["celery_messages"] = {
        "method": "Redis INFO commandstats delta over the run. LPUSH: a push of task "
        "messages onto a queue (one message from Celery's send_task, one or many from "
        "Batchline's pipelined pushes: a count of commands, not of messages). PUBLISH: a "
        "Celery event (task-sent, -received, -started, -succeeded on the celeryev fanout) or "
        "a result backend notification; the latter are counted as celery-task-meta-* keys left in "
        "Redis and subtracted",
        "task_messages": delta("lpush"),
        "event_messages": events,
        "results_stored": results_stored,
        "task_messages_per_request": round(delta("lpush") / n, 3),
        "event_messages_per_request": round(events / n, 3),
        "results_stored_per_request": round(results_stored / n, 3),
        "total_per_request": round((delta("lpush") + delta("publish")) / n, 3),
        "process_result_message_bytes": queue.message_bytes,
        "results_queue_max_length": queue.max_length,
    }
    batches = max(1, int(emu["batches_created"]))
    calls = {k: v for k, v in emu["calls"].items() if v}
    out["api_calls"] = {
        "batches_created": emu["batches_created"],
        "calls": calls,
        "calls_per_batch": round(sum(calls.values()) / batches, 2),
        "per_batch": {k: round(v / batches, 2) for k, v in calls.items()},
    }
    in_flight = redis_mem.median(IN_FLIGHT)
    peak = redis_mem.peak(IN_FLIGHT)
    out["redis_memory"] = {
        "method": "INFO used_memory before the upload vs its median while the job's requests "
        "were stored and none of its batches had ended (sampled every 50 ms), divided by "
        "the request count",
        "before_bytes": memory_before,
        "in_flight_bytes": in_flight,
        "in_flight_peak_bytes": peak,
        "in_flight_samples": sum(1 for s in redis_mem.samples if s[1] == IN_FLIGHT),
        "per_request_bytes": _per(in_flight, memory_before, n),
        "per_request_peak_bytes": _per(peak, memory_before, n),
        "request_bytes": round(job.avg_request_bytes, 1),
        "compressed_request_bytes": round(job.avg_compressed_bytes, 1),
        "stored_request_bytes": round(stored_request_bytes(job), 1),
        "result_stage_peak_bytes": redis_mem.peak(RESULTS),
        "result_stage_peak_per_request_bytes": _per(redis_mem.peak(RESULTS), memory_before, n),
    }
    stage_start = min((c.time_field("fanout_started_at") for c in chunks), default=None)
    stage_end = max((c.time_field("done_at") for c in chunks), default=None)
    cpu_s = redis_mem.cpu_between(stage_start, stage_end)
    out["redis_cpu"] = {
        "method": "Redis INFO cpu (used_cpu_user + used_cpu_sys), sampled every 50 ms: the "
        "last sample before the result stage began (first fan-out start) to the first after "
        "it ended (last chunk done), divided by the results",
        "seconds": None if cpu_s is None else round(cpu_s, 4),
        "us_per_result": None if cpu_s is None else round(cpu_s * 1e6 / n, 1),
        "results_per_s_per_core": None if not cpu_s else round(n / cpu_s),
    }
    out["worker_memory"] = {
        "processes": [p for p in rss.result() if p["role"] != "server"],
        "peak_rss_bytes": rss.max_bytes("batchline."),
        "body_bytes": job.body_bytes,
    }
    out["cpu"] = {
        "method": "user+system CPU seconds of each process from submit to the end "
        "(psutil), summed per worker and server",
        "seconds": rss.cpu_s(),
        "ms_per_request": {k: round(v * 1000 / n, 3) for k, v in rss.cpu_s().items()},
    }
    return out
