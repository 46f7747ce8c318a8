"""The monitoring kit of deploy/monitoring against the exporter it watches.

The alert rules pass their unit tests (`promtool test rules`); every metric the alerts and the
dashboard read is served by `batchline metrics`; every family is there from the first scrape
and the new ones move on a real job (a failing request, a retry, API 5xx and 429 answers,
refused submits, webhook deliveries waiting and dead); the operations doc lists exactly the
families served. One stack (Redis, the emulator, a worker, the exporter) serves every test
of the module.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from batchline.client import Client
from batchline.devstack import PROJECT_ROOT, Emulator, RedisServer, Worker, free_port, wait_for
from batchline.errors import JobConflict, JobRefused
from batchline.settings import Settings
from tests.ops.support import MetricsExporter, stop_all
from tests.ops.test_metrics import Samples, samples, value
from tests.support.jobs import DEFAULTS, prompts
from tests.support.procs import API_KEY, worker_env

MONITORING = PROJECT_ROOT / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "batchline.json"
OPERATIONS = PROJECT_ROOT / "docs" / "operations.md"

JOB_ID = "job_monitored"
MODEL = str(DEFAULTS["model"])
SECRET = "whsec_" + base64.b64encode(b"monitoring-test-secret").decode()
# A private address (refused: the delivery is dead at once) and a closed loopback port (the
# delivery fails and waits a minute for its retry, so it stays pending through the test).
DEAD_URL = "http://10.255.255.1/hook"
WAITING_URL = f"http://127.0.0.1:{free_port()}/hook"
SETTINGS: dict[str, Any] = {
    "webhook_secret": SECRET,
    "webhook_subscriptions": [
        {"url": DEAD_URL, "event_types": ["job.completed"]},
        {"url": WAITING_URL, "event_types": ["job.completed"]},
    ],
    "webhook_allow_loopback": True,
    "webhook_retry_schedule_s": [60],
    "webhook_retry_jitter": 0,
}

# The families this work added, and what each is at the first scrape (every label set of a
# family with labels is listed, each at 0).
NEW_AT_START: dict[str, list[dict[str, str]]] = {
    "batchline_api_errors_total": [
        {"endpoint": e, "kind": k}
        for e in ("create", "retrieve", "results", "cancel", "list")
        for k in (
            "server_error",
            "overloaded",
            "timeout",
            "connection",
            "rate_limited",
            "client_error",
        )
    ],
    "batchline_requests_failed_total": [
        {"error_type": t}
        for t in (
            "invalid_request_error",
            "api_error",
            "overloaded_error",
            "expired",
            "canceled",
            "missing_result",
            "unknown_error",
        )
    ],
    "batchline_requests_retried_total": [{}],
    "batchline_submits_refused_total": [
        {"reason": r} for r in ("bad_input", "budget", "redis_memory", "conflict")
    ],
    "batchline_webhook_deliveries_pending": [{}],
    "batchline_webhook_dead_letters": [{}],
    "batchline_oldest_batch_age_seconds": [{}],
    "batchline_cost_usd_by_model_total": [{"model": MODEL}],
    "batchline_queue_consumers": [{"queue": q} for q in ("ingest", "api", "results", "events")],
    "batchline_sweep_last_run_timestamp_seconds": [{}],
}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: `make promtool` installs it (Debian's prometheus)"
    return path


def served(text: str) -> dict[str, str]:
    """Every family a scrape serves: its name as a query names it (a counter's with _total)
    and its type. A family is served with at least one sample."""
    out = {}
    for family in text_string_to_metric_families(text):
        name = f"{family.name}_total" if family.type == "counter" else family.name
        assert family.samples, f"{name} is served without a sample"
        out[name] = family.type
    return out


@dataclass
class Fleet:
    """What the module's stack showed: scrapes at the start, while the job's batches were at
    the API, and at the end; the job's status and its hash in Redis."""

    at_start: Samples
    started_text: str
    during: Samples
    after: Samples
    after_text: str
    final: dict[str, Any]
    job_hash: dict[str, str]
    exporter_log: str
    seconds: float


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    t0 = time.monotonic()
    tmp = tmp_path_factory.mktemp("monitoring")
    server = RedisServer(tmp / "redis").start()
    emulator = Emulator(tmp, "--processing-seconds", "1").start()
    env = worker_env(server.url, emulator.base_url, **SETTINGS)
    client = Client(Settings(redis_url=server.url))
    exporter = MetricsExporter(tmp, env).start()
    procs: list[Any] = [exporter]
    try:
        # A fleet that has done nothing yet
        started_text = exporter.scrape()
        at_start = samples(started_text)
        # A worker, and a job whose first create is answered 429 and two polls 500 and 529;
        # one request fails for good, one fails once and is retried
        procs.append(Worker(tmp, env).start())
        emulator.configure(
            fail_next=[
                {"endpoint": "create", "status": 429, "retry_after": 0.2},
                {"endpoint": "retrieve", "status": 500},
                {"endpoint": "retrieve", "status": 529},
            ]
        )
        reqs = [
            *prompts(5),
            *prompts(1, "bad", " [[emulate:errored:invalid_request_error]]"),
            *prompts(1, "again", " [[emulate:errored-once:overloaded_error]]"),
        ]
        client.submit(reqs, defaults=DEFAULTS, job_id=JOB_ID)

        def at_the_api() -> Samples:
            found = samples(exporter.scrape())
            return found if value(found, "batchline_oldest_batch_age_seconds") > 0 else {}

        during = wait_for(at_the_api, 20, interval=0.1, what="a batch at the API")
        # Three submits refused: an invalid line, a budget, the job's id with other content
        with pytest.raises(JobRefused):
            client.submit([{"custom_id": "x", "params": {}}], defaults=DEFAULTS, fresh=True)
        with pytest.raises(JobRefused):
            client.submit(prompts(3, "costly"), defaults=DEFAULTS, max_cost_usd=1e-9)
        with pytest.raises(JobConflict):
            client.submit(prompts(1, "other"), defaults=DEFAULTS, job_id=JOB_ID)
        # The sweeper runs once (as beat runs it)
        client.app.send_task("batchline.sweep")
        final = client.wait(JOB_ID, timeout_s=60)

        # The job's completion goes to both webhook endpoints: one dead, one waiting
        def delivered() -> str:
            text = exporter.scrape()
            found = samples(text)
            dead = value(found, "batchline_webhook_dead_letters")
            waiting = value(found, "batchline_webhook_deliveries_pending")
            swept = value(found, "batchline_sweep_last_run_timestamp_seconds")
            return text if dead and waiting and swept else ""

        after_text = wait_for(delivered, 20, interval=0.2, what="the webhooks and the sweep")
        job_hash = {
            k.decode(): v.decode() for k, v in server.client().hgetall(f"bl:job:{JOB_ID}").items()
        }
    finally:
        stop_all(procs)
        emulator.stop()
        server.stop()
    yield Fleet(
        at_start=at_start,
        started_text=started_text,
        during=during,
        after=samples(after_text),
        after_text=after_text,
        final=final,
        job_hash=job_hash,
        exporter_log=exporter.log_text(),
        seconds=time.monotonic() - t0,
    )


def test_every_new_family_is_served_at_zero_first_and_moves_on_a_job(fleet: Fleet) -> None:
    start, after = fleet.at_start, fleet.after
    # At the first scrape: every new family, each label set at 0
    for name, label_sets in NEW_AT_START.items():
        for labels in label_sets:
            assert value(start, name, **labels) == 0, (name, labels)
    # The sweeper never ran: its age counts from the exporter's start (not -1), small
    assert 0 <= value(start, "batchline_sweep_age_seconds") < 30
    # After the job: API errors by endpoint and kind, each counted once
    errors = {
        (dict(k[1])["endpoint"], dict(k[1])["kind"]): v
        for k, v in after.items()
        if k[0] == "batchline_api_errors_total" and v
    }
    assert errors == {
        ("create", "rate_limited"): 1,
        ("retrieve", "server_error"): 1,
        ("retrieve", "overloaded"): 1,
    }
    # Failed requests by type, adding up to the failed requests
    assert value(after, "batchline_requests_failed_total", error_type="invalid_request_error") == 1
    failed = sum(v for k, v in after.items() if k[0] == "batchline_requests_failed_total")
    assert failed == value(after, "batchline_requests_total", state="failed") == 1
    # The request sent again, once
    assert value(after, "batchline_requests_retried_total") == 1
    assert fleet.final["counts"]["succeeded"] == 6
    # Submits refused, by reason
    for reason, n in (("bad_input", 1), ("budget", 1), ("conflict", 1), ("redis_memory", 0)):
        assert value(after, "batchline_submits_refused_total", reason=reason) == n, reason
    # Cost by model: the job's model carries the whole cost
    cost = value(after, "batchline_cost_usd_total")
    assert cost > 0
    assert abs(value(after, "batchline_cost_usd_by_model_total", model=MODEL) - cost) < 1e-9
    assert abs(cost - fleet.final["cost_usd"]) < 1e-6
    # A batch was at the API while the job ran, none is now
    assert 0 < value(fleet.during, "batchline_oldest_batch_age_seconds") < 60
    assert value(after, "batchline_oldest_batch_age_seconds") == 0
    # Webhooks: the delivery refused is a dead letter, the one that failed waits for a retry
    assert value(after, "batchline_webhook_dead_letters") == 1
    assert value(after, "batchline_webhook_deliveries_pending") == 1
    # The worker takes every queue; the sweeper ran just now
    for queue in ("ingest", "api", "results", "events"):
        assert value(after, "batchline_queue_consumers", queue=queue) == 1, queue
    last_run = value(after, "batchline_sweep_last_run_timestamp_seconds")
    assert abs(time.time() - last_run) < 60
    assert 0 <= value(after, "batchline_sweep_age_seconds") < 60
    # batchline_counter_total always has its samples
    for name in ("requests:cache_hits", "poll_list_refreshes"):
        assert start[("batchline_counter_total", (("name", name),))] == 0
    # The job's own counters, as `batchline status` reads them
    assert fleet.job_hash["failed:invalid_request_error"] == "1"
    assert fleet.job_hash["retried_requests"] == "1"
    # Nothing served or logged shows the API key
    for text in (fleet.started_text, fleet.after_text, fleet.exporter_log):
        assert API_KEY not in text
    # The module's stack stays cheap
    assert fleet.seconds < 60


def _promql(text: str) -> set[str]:
    """Batchline's metric names in PromQL text (a histogram's series as its family)."""
    names = set(re.findall(r"\bbatchline_[a-z0-9_]+", text))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def _dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] if p["type"] != "row" for t in p["targets"]]


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [rule for g in groups for rule in g["rules"]]


def test_every_metric_the_alerts_and_the_dashboard_read_is_served(fleet: Fleet) -> None:
    # Given every family served at the first scrape
    families = served(fleet.started_text)
    assert served(fleet.after_text) == families
    # Then each name an alert or a dashboard query reads is one of them
    alerts = {rule["alert"]: _promql(rule["expr"]) for rule in _alert_rules()}
    queries = {q: _promql(q) for q in _dashboard_queries()}
    for what, names in {**alerts, **queries}.items():
        assert names, what
        assert names <= set(families), (what, names - set(families))
    # And the dashboard shows what an operator watches
    shown = set().union(*queries.values())
    for name in (
        "batchline_requests_total",
        "batchline_queue_messages",
        "batchline_batches_in_flight",
        "batchline_requests_in_flight",
        "batchline_workers",
        "batchline_api_calls_total",
        "batchline_api_errors_total",
        "batchline_requests_failed_total",
        "batchline_requests_retried_total",
        "batchline_cost_usd_by_model_total",
        "batchline_oldest_batch_age_seconds",
        "batchline_webhook_deliveries_pending",
        "batchline_webhook_dead_letters",
        "batchline_redis_memory_used_bytes",
        "batchline_redis_memory_max_bytes",
        "batchline_sweep_age_seconds",
    ):
        assert name in shown, name


def test_the_operations_doc_lists_exactly_the_families_served(fleet: Fleet) -> None:
    rows = re.findall(
        r"^\| `(batchline_[a-z0-9_]+)` \| (counter|gauge) \|", OPERATIONS.read_text(), re.M
    )
    documented = dict(rows)
    assert len(documented) == len(rows), "a family is documented twice"
    assert documented == served(fleet.started_text)


def test_the_alert_rules_pass_their_unit_tests() -> None:
    out = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
    # Every alert is shown both firing and quiet there
    tests = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())["tests"]
    cases = [case for t in tests for case in t["alert_rule_test"]]
    for rule in _alert_rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']} is never shown firing"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']} is never shown quiet"


def test_the_prometheus_config_and_every_dashboard_query_parse(tmp_path: Path) -> None:
    # The config (and the rule files it loads) as Prometheus reads them
    out = subprocess.run(
        [promtool(), "check", "config", "prometheus.yml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # Every dashboard query, parsed by Prometheus as the expression of a recording rule
    rules = [
        {"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(_dashboard_queries())
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout
