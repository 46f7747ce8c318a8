"""`batchline metrics` on a live run: jobs, requests, batches, queues, API calls, tokens, cost."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from batchline.devstack import BIN, free_port, wait_for
from batchline.metrics import render
from batchline.settings import Settings
from tests.ops.support import MetricsExporter, get, stop_all
from tests.support.jobs import DEFAULTS, prompts
from tests.support.procs import recovery_as_deployed

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_exporter_reports_a_job_from_queue_to_cost(stack_factory: Any, tmp_path: Path) -> None:
    # Given a stack with no worker yet, and the exporter
    st = stack_factory("--processing-seconds", "1", max_batch_requests=50)
    exporter = MetricsExporter(tmp_path, st.env).start()
    try:
        before = samples(exporter.scrape())
        assert value(before, "batchline_redis_up", role="state") == 1
        assert value(before, "batchline_jobs_submitted_total") == 0
        assert value(before, "batchline_requests_in_flight_limit") == 100_000
        # beat never ran: the sweep's and the recovery pass's ages count from the exporter's
        # start, never -1
        assert 0 <= value(before, "batchline_sweep_age_seconds") < 30
        assert value(before, "batchline_sweep_last_run_timestamp_seconds") == 0
        assert 0 <= value(before, "batchline_recovery_age_seconds") < 30
        for reason in ("not_found", "overdue", "results_unreadable"):
            assert value(before, "batchline_blocked_chunks", reason=reason) == 0
        for state in ("live", "silent", "dead", "stopping"):
            assert value(before, "batchline_workers", state=state) == 0
        assert value(before, "batchline_recovery_actions_total", action="restored") == 0

        # When three messages wait on the ingest queue with nobody to take them
        for _ in range(3):
            st.client.app.send_task("batchline.get_job", args=("no-such-job",))
        # Then the ingest queue's depth shows them
        found = samples(exporter.scrape())
        assert value(found, "batchline_queue_messages", queue="ingest") == 3
        assert value(found, "batchline_queue_messages", queue="results") == 0

        # When a worker starts and a job runs whose first create call gets a 429
        st.emulator.configure(fail_next=[{"endpoint": "create", "status": 429, "retry_after": 0.2}])
        st.worker()
        reqs = prompts(96) + prompts(4, "perm", " [[emulate:errored:invalid_request_error]]")
        sub = st.client.submit(reqs, defaults=DEFAULTS)

        # Then while its batches are at the API: a running job, batches and requests in flight
        def in_flight() -> Samples:
            found = samples(exporter.scrape())
            at_api = value(found, "batchline_batches", state="in_progress") >= 1
            return found if at_api and value(found, "batchline_jobs", state="running") else {}

        during = wait_for(in_flight, 20, interval=0.1, what="batches in flight")
        assert value(during, "batchline_jobs", state="running") == 1
        assert value(during, "batchline_batches_in_flight") >= 1
        assert value(during, "batchline_requests_in_flight") >= 50
        assert value(during, "batchline_queue_messages", queue="ingest") == 0
        assert value(during, "batchline_workers", state="live") == 1
        assert value(during, "batchline_recovery_waiting_jobs") == 0

        final = st.client.wait(sub["job_id"], timeout_s=60)
        after = samples(exporter.scrape())
    finally:
        stop_all([*st.workers, exporter])

    # And afterwards: requests by terminal state, the job finished, calls, 429s, tokens, cost
    assert value(after, "batchline_requests_total", state="succeeded") == 96
    assert value(after, "batchline_requests_total", state="failed") == 4
    assert value(after, "batchline_jobs_submitted_total") == 1
    assert value(after, "batchline_jobs_finished_total", state="completed") == 1
    assert value(after, "batchline_jobs", state="running") == 0
    assert value(after, "batchline_batches_in_flight") == 0
    assert value(after, "batchline_requests_in_flight") == 0
    assert value(after, "batchline_api_calls_total", endpoint="create") >= 2
    assert value(after, "batchline_api_calls_total", endpoint="retrieve") >= 2
    assert value(after, "batchline_api_rate_limited_total") == 1
    assert value(after, "batchline_tokens_total", kind="output") == final["usage"]["output_tokens"]
    assert value(after, "batchline_tokens_total", kind="input") == final["usage"]["input_tokens"]
    assert abs(value(after, "batchline_cost_usd_total") - final["cost_usd"]) < 1e-6
    assert value(after, "batchline_redis_memory_used_bytes", role="state") > 0
    assert value(after, "batchline_jobs_retained") == 1

    # And `batchline metrics --once` prints the same counters for a one-off look
    once = subprocess.run(
        [str(BIN / "batchline"), "metrics", "--once"],
        env={"PATH": str(BIN), **st.env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    again = samples(once.stdout)
    assert value(again, "batchline_requests_total", state="succeeded") == 96


def test_exporter_stays_up_when_redis_is_down(tmp_path: Path) -> None:
    # Given an exporter whose Redis is not there
    env = {"BATCHLINE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    exporter = MetricsExporter(tmp_path, env).start()
    try:
        # When scraped, it answers with redis_up 0 instead of failing the scrape
        found = samples(exporter.scrape())
        assert value(found, "batchline_redis_up", role="state") == 0
        assert get(exporter.url)[0] == 200
    finally:
        exporter.stop()
    assert "metrics.redis_unreachable" in exporter.log_text()


def test_a_dead_worker_and_blocked_chunks_show_what_waits_and_until_when(
    stack_factory: Any, tmp_path: Path
) -> None:
    from tests.ops.test_doctor import blocked_job

    # Given a worker holding a job's next poll when it is killed (no beat: nothing recovers
    # it), a job with a chunk blocked for each reason, and the exporter
    st = stack_factory(**recovery_as_deployed())
    doomed = st.worker(queues=["api"], name="doomed")
    st.client.app.send_task(
        "batchline.poll_batch", args=("job_waits", 2, "msgbatch_w", 1), countdown=600
    )
    r = st.redis.client()
    wait_for(lambda: r.hlen("unacked") == 1 and not r.llen("api"), 20, what="the poll held")
    blocked_job(r, "job_blocked", since=1_800_000_000)
    exporter = MetricsExporter(tmp_path, st.env).start()
    try:
        found = samples(exporter.scrape())
        assert value(found, "batchline_workers", state="live") == 1
        assert value(found, "batchline_recovery_waiting_messages") == 0
        # When the worker is killed and its heartbeat stops
        doomed.kill()

        def silent() -> Samples:
            found = samples(exporter.scrape())
            return found if value(found, "batchline_recovery_waiting_jobs") else {}

        found = wait_for(silent, 40, interval=0.5, what="the worker to be silent")
    finally:
        stop_all([*st.workers, exporter])
    # Then the worker is silent (or dead), one job waits on it with one message, until a
    # time at most one death detection and one pass away
    assert value(found, "batchline_workers", state="live") == 0
    assert (
        value(found, "batchline_workers", state="silent")
        + value(found, "batchline_workers", state="dead")
    ) == 1
    assert value(found, "batchline_recovery_waiting_messages") == 1
    kinds = ("worker_silent", "worker_dead", "lost_results")
    assert sum(value(found, "batchline_recovery_waits", kind=k) for k in kinds) == 1
    assert 0 < value(found, "batchline_recovery_due_seconds") <= 20 + 15
    # And the blocked chunks are counted by reason
    for reason in ("not_found", "overdue", "results_unreadable"):
        assert value(found, "batchline_blocked_chunks", reason=reason) == 1
    assert value(found, "batchline_batches", state="blocked") == 3


# --- the counters behind the families, one script or call at a time ---


def _store(redis_url: str) -> Any:
    import redis

    from batchline.store import Store

    return Store(redis.Redis.from_url(redis_url), Settings(redis_url=redis_url))


def test_finish_counts_failures_by_type_and_cost_by_model_once(redis_server: Any) -> None:
    from batchline.store import Item

    store = _store(redis_server.url)
    r = store.r
    job = store.keys("j1").job
    r.hset(job, mapping={"accepted": 10, "succeeded": 0, "failed": 0, "canceled": 0})
    usage = (10, 20, 0, 0, 1500)
    items = [
        Item("a", "failed", b"r", detail="invalid_request_error"),
        Item("b", "failed", b"r", detail="invalid_request_error"),
        Item("c", "failed", b"r", detail="expired"),
        Item("d", "failed", b"r"),  # no type given
        Item("e", "failed", b"r", detail="bad type!\nwith a new line"),
        Item("f", "succeeded", b"r", usage=usage, detail="claude-haiku-4-5"),
        Item("g", "succeeded", b"r", usage=usage, detail="claude-haiku-4-5"),
        Item("h", "succeeded", b"r", usage=(1, 1, 0, 0, 700), detail="claude-sonnet-4"),
        Item("i", "retry", b"{}"),
        Item("k", "canceled", b"r"),
    ]
    # When the results are recorded, and recorded again (a redelivered group)
    store.finish("j1", 0, items)
    store.finish("j1", 0, items)
    # Then each failure is counted once by type, in the job and in the fleet's stats
    stats = {k.decode(): int(v) for k, v in r.hgetall(store.fleet.stats).items()}
    fields = {k.decode(): v.decode() for k, v in r.hgetall(job).items()}
    expected = {
        "failed:invalid_request_error": 2,
        "failed:expired": 1,
        "failed:unknown_error": 1,
        "failed:other": 1,
    }
    for field, n in expected.items():
        assert stats[field] == n and fields[field] == str(n), field
    assert sum(n for k, n in stats.items() if k.startswith("failed:")) == stats["requests:failed"]
    # And the cost by model, adding up to the total
    assert stats["cost_nusd:claude-haiku-4-5"] == 3000
    assert stats["cost_nusd:claude-sonnet-4"] == 700
    assert stats["cost_nusd"] == 3700
    # And the exporter reads them into their families
    found = samples(render(store.settings).decode())
    assert value(found, "batchline_requests_failed_total", error_type="expired") == 1
    assert value(found, "batchline_requests_failed_total", error_type="other") == 1
    assert value(found, "batchline_requests_failed_total", error_type="api_error") == 0
    assert value(found, "batchline_cost_usd_by_model_total", model="claude-haiku-4-5") == 3e-6
    assert value(found, "batchline_cost_usd_by_model_total", model="claude-opus-4") == 0


def test_a_request_retried_twice_is_one_request_retried(redis_server: Any) -> None:
    from batchline import scripts as lua

    store = _store(redis_server.url)
    r = store.r
    keys = store.keys("j2")

    def retry_chunk(number: int, ids: list[str]) -> int:
        r.rpush(keys.retry_pool, *ids)
        return int(
            lua.MAKE_RETRY_CHUNK(
                r,
                lua.MakeRetryChunkKeys(
                    job=keys.job,
                    pool=keys.retry_pool,
                    chunks=keys.chunks,
                    retries=keys.retries,
                    meta=keys.chunk(number).meta,
                    ids=keys.chunk(number).ids,
                    stats=store.fleet.stats,
                ),
                lua.MakeRetryChunkArgs(len(ids), ids[0], ids[-1], number, 100, 1.0, f"t{number}"),
            )
        )

    # Given a retry batch of three requests, then a second one with two of them again and
    # one sent again for the first time
    assert retry_chunk(1, ["a", "b", "c"]) == 2
    assert retry_chunk(2, ["a", "b", "d"]) == 3
    # Then four requests were retried (each counted once), in five sends
    assert r.hget(keys.job, "retried_requests") == b"4"
    assert r.hget(keys.job, "retried") == b"6"
    assert r.hget(store.fleet.stats, "requests:retried") == b"4"
    assert value(samples(render(store.settings).decode()), "batchline_requests_retried_total") == 4


def test_refusals_are_told_apart_by_reason() -> None:
    import redis

    from batchline import memory
    from batchline.errors import JobConflict, JobRefused
    from batchline.metrics import refusal_reason

    class Full:
        def info(self, section: str) -> dict[str, int]:
            return {"used_memory": 95, "maxmemory": 100}

    with pytest.raises(JobRefused) as no_room:
        memory.check_room(Full(), 0.9, 10, "this job")
    oom = memory.refusal(redis.exceptions.OutOfMemoryError("OOM"), "this job")
    assert refusal_reason(no_room.value) == refusal_reason(oom) == "redis_memory"
    assert refusal_reason(JobConflict("job 'x' exists with different content")) == "conflict"
    budget = "estimated cost $1.0000 exceeds the budget max_cost_usd=$0.1000; nothing was sent"
    assert refusal_reason(JobRefused(budget)) == "budget"
    assert refusal_reason(JobRefused("2 invalid line(s), nothing was sent")) == "bad_input"


def test_each_failed_api_call_is_counted_once_by_kind() -> None:
    import anthropic
    import httpx2

    from batchline import api
    from batchline.errors import ApiError

    request = httpx2.Request("GET", "http://api.invalid/v1/messages/batches")

    def status(code: int) -> Exception:
        response = httpx2.Response(code, request=request, json={"error": {"type": "x"}})
        return anthropic.APIStatusError(f"HTTP {code}", response=response, body=None)

    class Client:  # a stand-in for the SDK's client: the counters are kept per client
        pass

    counted: list[tuple[str, str]] = []
    client, other = Client(), Client()
    api.count_errors(client, lambda endpoint, kind: counted.append((endpoint, kind)))
    cases = [
        (status(500), "server_error"),
        (status(503), "server_error"),
        (status(529), "overloaded"),
        (status(429), "rate_limited"),
        (status(408), "timeout"),
        (status(400), "client_error"),
        (status(404), "client_error"),
        (anthropic.APITimeoutError(request=request), "timeout"),
        (anthropic.APIConnectionError(request=request), "connection"),
        (httpx2.ReadTimeout("slow", request=request), "timeout"),
        (httpx2.RemoteProtocolError("cut", request=request), "connection"),
    ]
    for exc, kind in cases:
        counted.clear()
        with pytest.raises(ApiError), api.translated(client, "retrieve"):
            raise exc
        assert counted == [("retrieve", kind)], exc
    # A call that succeeds counts nothing; another client's errors go to its own counter
    counted.clear()
    with api.translated(client, "list"):
        pass
    with pytest.raises(ApiError), api.translated(other, "list"):
        raise status(500)
    assert counted == []
