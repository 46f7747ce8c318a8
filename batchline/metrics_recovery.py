"""Prometheus metrics of worker liveness and recovery: workers by heartbeat, what jobs wait
for while a dead worker's work is handed over, and what the recovery pass did."""

from __future__ import annotations

import time
from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from batchline import liveness, logs
from batchline.messaging.queues import Queue
from batchline.settings import Settings

WORKER_STATES = ("live", "silent", "dead", "stopping")
WAIT_KINDS = ("worker_silent", "worker_dead", "lost_results")
RECOVERY_ACTIONS = ("restored", "dead", "republished", "fan_outs", "hooks", "plans", "watched")


def recovery_metrics(
    s: Settings,
    state: redis.Redis,
    broker: redis.Redis,
    stats: dict[str, int],
    exporter_started: float,
) -> Iterator[Metric]:
    """Workers by heartbeat, what jobs wait for while the fleet recovers, and what the
    recovery pass did."""
    now = time.time()
    keys = liveness.LivenessKeys(s.key_prefix)
    reports, _ = liveness.read_reports(state, keys, held=False)
    states = dict.fromkeys(WORKER_STATES, 0)
    consumers = dict.fromkeys((q.value for q in Queue), 0)
    for rep in reports:
        if rep.stopped:
            continue
        if not rep.alive:
            states["dead"] += 1
        elif rep.state == liveness.STOPPING:
            states["stopping"] += 1
        elif rep.silent_for(now) > 2 * s.worker_heartbeat_s:
            states["silent"] += 1
        else:
            states["live"] += 1
            for q in rep.queues:
                if q in consumers:
                    consumers[q] += 1
    workers = GaugeMetricFamily(
        "batchline_workers",
        "Workers by heartbeat: live, silent (late, not yet dead), dead (not yet recovered), "
        "stopping",
        labels=["state"],
    )
    for st, n in states.items():
        workers.add_metric([st], n)
    yield workers
    taking = GaugeMetricFamily(
        "batchline_queue_consumers",
        "Live workers taking messages from a stage's queue",
        labels=["queue"],
    )
    for q, n in consumers.items():
        taking.add_metric([q], n)
    yield taking
    try:
        pending = liveness.waits(state, s, broker=broker, now=now)
    except redis.RedisError as exc:  # the broker (when apart) is reported on its own
        logs.warning("metrics.recovery_unreadable", error=str(exc))
        pending = []
    by_kind = dict.fromkeys(WAIT_KINDS, 0)
    for w in pending:
        by_kind[w.kind] = by_kind.get(w.kind, 0) + 1
    waits = GaugeMetricFamily(
        "batchline_recovery_waits",
        "What jobs wait for while the fleet recovers: a silent or dead worker's messages, "
        "results a dead worker took with it",
        labels=["kind"],
    )
    for kind, n in by_kind.items():
        waits.add_metric([kind], n)
    yield waits
    last = state.get(liveness.RecoveryKeys(s.key_prefix).last_run)
    gauges = (
        (
            "batchline_recovery_waiting_jobs",
            "Jobs waiting on recovery",
            len({w.job_id for w in pending if w.job_id}),
        ),
        (
            "batchline_recovery_waiting_messages",
            "Messages held by silent or dead workers, waiting to be handed over",
            sum(w.messages for w in pending),
        ),
        (
            "batchline_recovery_due_seconds",
            "Seconds until the last thing waiting on recovery is due to be handed over",
            max([max(0.0, w.until - now) for w in pending], default=0.0),
        ),
        (
            "batchline_recovery_age_seconds",
            "Seconds since the recovery pass (run by beat) last ran; before its first run, "
            "seconds since this exporter started",
            now - float(last) if last else now - exporter_started,
        ),
    )
    for name, doc, value in gauges:
        g = GaugeMetricFamily(name, doc)
        g.add_metric([], value)
        yield g
    actions = CounterMetricFamily(
        "batchline_recovery_actions",
        "What the recovery pass did: messages restored, dead workers, results published "
        "again, fan-outs restarted, hooks sent, plans re-driven, chunks watched",
        labels=["action"],
    )
    for action in RECOVERY_ACTIONS:
        actions.add_metric([action], stats.get(f"recovery:{action}", 0))
    yield actions
