"""Prometheus metrics Flower does not give, read from Redis at each scrape (`batchline metrics`)."""

from __future__ import annotations

import functools
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from batchline import logs
from batchline.api import API_ENDPOINTS, API_ERROR_KINDS
from batchline.errors import JobConflict, JobRefused
from batchline.keys import FleetKeys, JobKeys, WebhookKeys
from batchline.messaging.queues import Queue
from batchline.metrics_recovery import RECOVERY_ACTIONS, recovery_metrics
from batchline.pricing import NANO
from batchline.redaction import redact_url
from batchline.redisconn import connect
from batchline.settings import Settings
from batchline.store import CLOSED_CHUNK_STATES, FINAL_JOB_STATES, OPEN_CHUNK_STATES

REDIS_TIMEOUT_S = 5.0
# A scrape walks the chunks of at most this many active jobs (the rest are counted by state only).
MAX_JOBS_WALKED = 2000
# kombu's Redis transport keeps a queue's priority levels in lists named queue + SEP + level.
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED_KEY = "unacked"

REQUEST_STATES = ("succeeded", "failed", "canceled", "rejected")
JOB_FINAL_STATES = ("completed", "canceled")
ACTIVE_JOB_STATES = ("ingesting", "pending", "running")  # always exported, zero or not
TOKEN_KINDS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_creation_input_tokens": "cache_creation_input",
    "cache_read_input_tokens": "cache_read_input",
}
# A blocked chunk waits for an operator (`batchline unblock`); always exported, zero or not.
BLOCKED_REASONS = ("not_found", "overdue", "results_unreadable")
# Why a request ended failed: the API's error types, then Batchline's own (always exported;
# a type not listed here is exported once it is seen).
FAILURE_TYPES = (
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "timeout_error",
    "overloaded_error",
    "billing_error",
    "expired",  # the batch expired before the request ran (after its last attempt)
    "canceled",  # the batch was canceled before the request ran (after its last attempt)
    "missing_result",  # the batch's results had no line for it (after its last attempt)
    "invalid_result",  # a result line Batchline cannot read
    "unknown_error",  # an errored result without a type
    "other",  # a type too long or with characters a label should not hold
)
# Why a submit was refused (see refusal_reason).
REFUSAL_REASONS = ("bad_input", "budget", "redis_memory", "conflict")
# Fleet counters without a family of their own (batchline_counter_total{name}).
OTHER_COUNTERS = ("requests:cache_hits", "poll_list_refreshes")
# Fields of the stats hash read into a family of their own, by prefix or by name.
FAMILY_PREFIXES = ("api_calls:", "api_errors:", "failed:", "cost_nusd:", "submits_refused:")
KNOWN_STATS = (
    {f"requests:{s}" for s in REQUEST_STATES}
    | {f"jobs:{s}" for s in ("submitted", *JOB_FINAL_STATES)}
    | set(TOKEN_KINDS)
    | {"cost_nusd", "api_429", "requests:retried"}
    | {f"recovery:{a}" for a in RECOVERY_ACTIONS}
)
# A scrape reads the backlog of at most this many webhook lanes (endpoint and job).
MAX_LANES_READ = 10_000

F = TypeVar("F", bound=Callable[..., Any])


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _int(v: bytes | str | None) -> int:
    try:
        return int(v) if v not in (None, b"", "") else 0
    except ValueError:
        return 0


def refusal_reason(exc: Exception) -> str:
    """Why submit_job refused a job: `conflict` (the job id exists with other content),
    `redis_memory` (Redis is too full to take it), `budget` (its estimate exceeds
    max_cost_usd), or `bad_input` (anything else: unreadable or invalid input, options)."""
    if isinstance(exc, JobConflict):
        return "conflict"
    text = str(exc)
    if text.startswith("Redis memory"):
        return "redis_memory"
    if "exceeds the budget" in text:
        return "budget"
    return "bad_input"


def refusals_counted(submit: F) -> F:
    """Count each job `submit` refuses (JobRefused, JobConflict) in the fleet stats, by
    reason: `submits_refused:<reason>` (batchline_submits_refused_total)."""

    @functools.wraps(submit)
    def counted(ctx: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return submit(ctx, *args, **kwargs)
        except (JobRefused, JobConflict) as exc:
            field = f"submits_refused:{refusal_reason(exc)}"
            try:
                ctx.store.r.hincrby(ctx.store.fleet.stats, field, 1)
            except redis.RedisError as count_exc:
                logs.warning("metrics.count_failed", counter=field, error=str(count_exc))
            raise

    return counted  # type: ignore[return-value]


def _labelled(stats: dict[str, int], prefix: str, known: Iterable[str]) -> dict[str, int]:
    """The counters `prefix<label>` of the stats hash by label: every known label (0 when
    never counted), then any other label seen."""
    out = dict.fromkeys(known, 0)
    for key, n in stats.items():
        if key.startswith(prefix):
            out[key[len(prefix) :]] = n
    return out


class FleetCollector(Collector):
    """Jobs, requests, batches, queues, API calls, tokens and cost, straight from Redis."""

    def __init__(self, settings: Settings, state: redis.Redis, broker: redis.Redis | None = None):
        self.settings = settings
        self.state = state
        self.broker = broker or state
        self.shared = broker is None
        self.fleet = FleetKeys(settings.key_prefix)
        self.webhooks = WebhookKeys(settings.key_prefix)
        # Before the sweeper's first run, its age counts from the exporter's start: a beat
        # that never ran shows a growing age, not a constant.
        self.started = time.time()

    def describe(self) -> Iterable[Metric]:
        # Registering must not touch Redis: an unreachable Redis still starts the exporter.
        return []

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        up = GaugeMetricFamily(
            "batchline_redis_up", "1 when the last scrape could read this Redis", labels=["role"]
        )
        # Each Redis is read whole before anything is yielded: a scrape never mixes a
        # half-read Redis with a zero `up`.
        try:
            yield from list(self._state_metrics())
            up.add_metric(["state"], 1)
        except redis.RedisError as exc:
            logs.warning("metrics.redis_unreachable", role="state", error=str(exc))
            up.add_metric(["state"], 0)
        try:
            yield from list(self._broker_metrics())
            if not self.shared:
                up.add_metric(["broker"], 1)
        except redis.RedisError as exc:
            logs.warning("metrics.redis_unreachable", role="broker", error=str(exc))
            if not self.shared:
                up.add_metric(["broker"], 0)
        yield up
        took = GaugeMetricFamily(
            "batchline_scrape_duration_seconds", "Time this scrape spent reading Redis"
        )
        took.add_metric([], time.perf_counter() - started)
        yield took

    # --- job state (the state Redis) ---

    def _state_metrics(self) -> Iterator[Metric]:
        r, f, wh = self.state, self.fleet, self.webhooks
        now = time.time()
        pipe = r.pipeline(transaction=False)
        pipe.hgetall(f.stats)
        pipe.smembers(f.active_jobs)
        pipe.hvals(f.in_flight)
        pipe.llen(f.admission)
        pipe.pttl(f.pause)
        pipe.zcard(f.jobs)
        pipe.get(f.last_sweep)
        pipe.zrange(f.poll_in_flight, 0, 0, withscores=True)
        # A dead letter lasts as long as its delivery (the events' retention).
        pipe.zcount(wh.dead, now - self.settings.events_retention_s, "+inf")
        pipe.zrange(wh.due, 0, MAX_LANES_READ - 1)
        (
            stats_raw,
            active_raw,
            held_raw,
            waiting,
            pause_ms,
            retained,
            swept,
            oldest,
            dead_letters,
            lanes,
        ) = pipe.execute()
        stats = {_text(k): _int(v) for k, v in stats_raw.items()}
        active = sorted(_text(j) for j in active_raw)
        pending_deliveries = 0
        if lanes:
            pipe = r.pipeline(transaction=False)
            for ref in lanes:
                pipe.llen(wh.lane(_text(ref)))
            pending_deliveries = sum(pipe.execute())

        yield from self._counters(stats)
        yield from recovery_metrics(self.settings, self.state, self.broker, stats, self.started)

        jobs = GaugeMetricFamily(
            "batchline_jobs", "Jobs not yet completed or canceled, by state", labels=["state"]
        )
        # A finished job stays in the active set until the sweep has sent its last hooks.
        job_states = {
            j: st for j, st in self._job_states(active).items() if st not in FINAL_JOB_STATES
        }
        active = sorted(job_states)
        by_state = dict.fromkeys(ACTIVE_JOB_STATES, 0)
        for st in job_states.values():
            by_state[st] = by_state.get(st, 0) + 1
        for st, n in sorted(by_state.items()):
            jobs.add_metric([st], n)
        yield jobs
        kept = GaugeMetricFamily(
            "batchline_jobs_retained", "Jobs whose state is still in Redis (within retention)"
        )
        kept.add_metric([], retained)
        yield kept

        batches = GaugeMetricFamily(
            "batchline_batches",
            "Batches (chunks) of the jobs not yet finished, by state",
            labels=["state"],
        )
        chunk_states: dict[str, int] = dict.fromkeys((*OPEN_CHUNK_STATES, *CLOSED_CHUNK_STATES), 0)
        walked, blocked_by = self._chunk_states(active[:MAX_JOBS_WALKED])
        chunk_states.update(walked)
        for st, n in sorted(chunk_states.items()):
            batches.add_metric([st], n)
        yield batches
        blocked = GaugeMetricFamily(
            "batchline_blocked_chunks",
            "Chunks blocked until an operator decides (`batchline unblock`), by reason",
            labels=["reason"],
        )
        for reason, n in sorted({**dict.fromkeys(BLOCKED_REASONS, 0), **blocked_by}.items()):
            blocked.add_metric([reason], n)
        yield blocked

        held = [_int(v) for v in held_raw]
        gauges = (
            (
                "batchline_batches_in_flight",
                "Batches created (or being created) at the API and not yet ended",
                len(held),
            ),
            (
                "batchline_batches_waiting_admission",
                "Batches waiting for room under the in-flight request cap",
                waiting,
            ),
            (
                "batchline_requests_in_flight",
                "Requests in batches at the API that have not ended",
                sum(held),
            ),
            (
                "batchline_requests_in_flight_limit",
                "The in-flight request cap (BATCHLINE_MAX_IN_FLIGHT_REQUESTS)",
                self.settings.max_in_flight_requests,
            ),
            (
                "batchline_sweep_age_seconds",
                "Seconds since the sweeper (run by beat) last ran; before its first run, "
                "seconds since this exporter started",
                now - float(swept) if swept else now - self.started,
            ),
            (
                "batchline_sweep_last_run_timestamp_seconds",
                "When the sweeper last ran (Unix time), 0 if it never ran",
                float(swept) if swept else 0.0,
            ),
            (
                "batchline_oldest_batch_age_seconds",
                "Seconds since the oldest batch at the API that has not ended was created, "
                "0 when none is",
                max(0.0, now - float(oldest[0][1])) if oldest else 0.0,
            ),
            (
                "batchline_webhook_deliveries_pending",
                "Webhook deliveries waiting to be delivered (being tried, or waiting for a retry)",
                pending_deliveries,
            ),
            (
                "batchline_webhook_dead_letters",
                "Webhook deliveries that failed their last attempt and are kept for a replay",
                dead_letters,
            ),
            (
                "batchline_api_pause_seconds",
                "Seconds left of the fleet-wide pause after a 429",
                max(0, pause_ms or 0) / 1000,  # PTTL is negative when there is no pause
            ),
        )
        for name, doc, value in gauges:
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], value)
            yield g

        yield from self._memory(r, "state")

    def _counters(self, stats: dict[str, int]) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "batchline_requests",
            "Requests that reached a terminal state, by state",
            labels=["state"],
        )
        for st in REQUEST_STATES:
            requests.add_metric([st], stats.get(f"requests:{st}", 0))
        yield requests
        submitted = CounterMetricFamily("batchline_jobs_submitted", "Jobs accepted")
        submitted.add_metric([], stats.get("jobs:submitted", 0))
        yield submitted
        finished = CounterMetricFamily(
            "batchline_jobs_finished", "Jobs that ended, by final state", labels=["state"]
        )
        for st in JOB_FINAL_STATES:
            finished.add_metric([st], stats.get(f"jobs:{st}", 0))
        yield finished
        calls = CounterMetricFamily(
            "batchline_api_calls",
            "Calls to the Message Batches API, by endpoint",
            labels=["endpoint"],
        )
        for endpoint, n in _labelled(stats, "api_calls:", API_ENDPOINTS).items():
            calls.add_metric([endpoint], n)
        yield calls
        errors = CounterMetricFamily(
            "batchline_api_errors",
            "Failed calls to the Message Batches API, by endpoint and kind: server_error (5xx), "
            "overloaded (529), timeout, connection, rate_limited (429), client_error (other 4xx)",
            labels=["endpoint", "kind"],
        )
        pairs = [f"{e}:{k}" for e in API_ENDPOINTS for k in API_ERROR_KINDS]
        for pair, n in _labelled(stats, "api_errors:", pairs).items():
            endpoint, _, kind = pair.partition(":")
            errors.add_metric([endpoint, kind], n)
        yield errors
        limited = CounterMetricFamily(
            "batchline_api_rate_limited",
            "Answers of HTTP 429 from the API that paused the fleet's calls",
        )
        limited.add_metric([], stats.get("api_429", 0))
        yield limited
        failed = CounterMetricFamily(
            "batchline_requests_failed",
            "Requests that ended failed, by error type (the API's, or Batchline's own)",
            labels=["error_type"],
        )
        for error_type, n in _labelled(stats, "failed:", FAILURE_TYPES).items():
            failed.add_metric([error_type], n)
        yield failed
        retried = CounterMetricFamily(
            "batchline_requests_retried",
            "Requests sent again in a retry batch (each counted once, at its first retry)",
        )
        retried.add_metric([], stats.get("requests:retried", 0))
        yield retried
        refused = CounterMetricFamily(
            "batchline_submits_refused",
            "Jobs submit_job refused, by reason: bad_input, budget, redis_memory, conflict",
            labels=["reason"],
        )
        for reason, n in _labelled(stats, "submits_refused:", REFUSAL_REASONS).items():
            refused.add_metric([reason], n)
        yield refused
        tokens = CounterMetricFamily(
            "batchline_tokens", "Tokens billed for finished requests, by kind", labels=["kind"]
        )
        for field, kind in TOKEN_KINDS.items():
            tokens.add_metric([kind], stats.get(field, 0))
        yield tokens
        cost = CounterMetricFamily(
            "batchline_cost_usd", "Cost of finished requests at batch prices, in USD"
        )
        cost.add_metric([], stats.get("cost_nusd", 0) / NANO)
        yield cost
        by_model = CounterMetricFamily(
            "batchline_cost_usd_by_model",
            "Cost of finished requests at batch prices, in USD, by model as the price table "
            "names it",
            labels=["model"],
        )
        for model, n in _labelled(stats, "cost_nusd:", self.settings.prices).items():
            by_model.add_metric([model], n / NANO)
        yield by_model
        other = CounterMetricFamily(
            "batchline_counter",
            "Other fleet counters of the stats hash in Redis, by name",
            labels=["name"],
        )
        names = dict.fromkeys(OTHER_COUNTERS, 0)
        for key, n in stats.items():
            if key not in KNOWN_STATS and not key.startswith(FAMILY_PREFIXES):
                names[key] = n
        for name, n in names.items():
            other.add_metric([name], n)
        yield other

    def _job_states(self, active: list[str]) -> dict[str, str]:
        prefix = self.settings.key_prefix
        pipe = self.state.pipeline(transaction=False)
        for job_id in active:
            pipe.hget(JobKeys(prefix, job_id).job, "state")
        out = {}
        for job_id, st in zip(active, pipe.execute(), strict=True):
            if st is not None:
                out[job_id] = _text(st)
        return out

    def _chunk_states(self, active: list[str]) -> tuple[dict[str, int], dict[str, int]]:
        """Chunks by state, and blocked chunks by reason."""
        prefix = self.settings.key_prefix
        pipe = self.state.pipeline(transaction=False)
        for job_id in active:
            pipe.lrange(JobKeys(prefix, job_id).chunks, 0, -1)
        numbers = pipe.execute()
        pipe = self.state.pipeline(transaction=False)
        for job_id, ns in zip(active, numbers, strict=True):
            for n in ns:
                pipe.hmget(JobKeys(prefix, job_id).chunk(_text(n)).meta, "state", "blocked_reason")
        counts: dict[str, int] = {}
        blocked: dict[str, int] = {}
        for st, reason in pipe.execute():
            if st is not None:
                counts[_text(st)] = counts.get(_text(st), 0) + 1
                if _text(st) == "blocked":
                    why = _text(reason) if reason else "unknown"
                    blocked[why] = blocked.get(why, 0) + 1
        return counts, blocked

    # --- the broker: queue depths per stage ---

    def _broker_metrics(self) -> Iterator[Metric]:
        pipe = self.broker.pipeline(transaction=False)
        for q in Queue:
            for step in PRIORITY_STEPS:
                pipe.llen(q.value if step == 0 else f"{q.value}{PRIORITY_SEP}{step}")
        pipe.hlen(UNACKED_KEY)
        values = pipe.execute()
        depth = GaugeMetricFamily(
            "batchline_queue_messages",
            "Messages waiting in a stage's queue (not yet taken by a worker)",
            labels=["queue"],
        )
        n = len(PRIORITY_STEPS)
        for i, q in enumerate(Queue):
            depth.add_metric([q.value], sum(values[i * n : (i + 1) * n]))
        yield depth
        unacked = GaugeMetricFamily(
            "batchline_broker_unacked_messages",
            "Messages taken by workers and not yet acknowledged (running or waiting for a "
            "countdown)",
        )
        unacked.add_metric([], values[-1])
        yield unacked
        if not self.shared:
            yield from self._memory(self.broker, "broker")

    def _memory(self, r: redis.Redis, role: str) -> Iterator[Metric]:
        info: dict[str, Any] = r.info("memory")
        used = GaugeMetricFamily(
            "batchline_redis_memory_used_bytes", "Memory Redis uses", labels=["role"]
        )
        used.add_metric([role], float(info.get("used_memory", 0)))
        yield used
        limit = GaugeMetricFamily(
            "batchline_redis_memory_max_bytes", "Redis maxmemory (0: no limit)", labels=["role"]
        )
        limit.add_metric([role], float(info.get("maxmemory", 0)))
        yield limit


def make_registry(settings: Settings) -> CollectorRegistry:
    """A registry holding only Batchline's collector (no process metrics of the exporter)."""
    kw: dict[str, Any] = {
        "socket_timeout": REDIS_TIMEOUT_S,
        "socket_connect_timeout": REDIS_TIMEOUT_S,
    }
    state = connect(settings.state, settings, **kw)
    broker = None if settings.broker == settings.state else connect(settings.broker, settings, **kw)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(settings, state, broker))
    return registry


def render(settings: Settings) -> bytes:
    """One scrape's worth of metrics in Prometheus text format."""
    return generate_latest(make_registry(settings))


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve /metrics on host:port until SIGTERM or SIGINT."""
    registry = make_registry(settings)
    server, thread = start_http_server(port, addr=host, registry=registry)
    logs.event("metrics.serving", host=host, port=port, redis=redact_url(settings.state))
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        stop.wait()
    finally:
        server.shutdown()
        thread.join(5)
