"""Horizontal scaling: three workers on three hosts share one job; state changes logged as JSON."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import orjson

from tests.ops.support import stop_all
from tests.support.jobs import DEFAULTS, check_records, prompts
from tests.support.procs import API_KEY, wait_for

HOSTS = ("host1", "host2", "host3")
# Celery's line for a result task that succeeded (kept at INFO with BATCHLINE_RESULT_LOGS).
TASK_DONE = re.compile(rb"Task (batchline\.[a-z_]+)\[[0-9a-f-]+\] succeeded")


def json_lines(text: bytes) -> list[dict[str, Any]]:
    """Batchline's own log lines (JSON); celery's lines in the same log are text."""
    return [orjson.loads(line) for line in text.splitlines() if line.startswith(b"{")]


def test_three_workers_on_three_hosts_share_one_job(stack_factory: Any) -> None:
    # Given three workers on three hostnames, every queue each, logging JSON, with the
    # per-request lines at INFO
    st = stack_factory(max_batch_requests=50, log_json=True, result_logs=True)
    workers = [
        st.worker(wait=False, name=f"w{i + 1}", hostname=host, concurrency=2)
        for i, host in enumerate(HOSTS)
    ]
    for w in workers:
        wait_for(w.ready, 60, interval=0.1, what=w.name)
    assert [w.name for w in workers] == ["w1@host1", "w2@host2", "w3@host3"]

    # When one job of 300 requests (six batches) runs
    reqs = prompts(300)
    sub = st.client.submit(reqs, defaults=DEFAULTS)
    final = st.client.wait(sub["job_id"], timeout_s=90)
    job_id = sub["job_id"]

    # Then the job completes and every custom_id ends in exactly one terminal state
    assert final["state"] == "completed"
    assert check_records(reqs, list(st.client.results(job_id))) == {"succeeded": 300}
    assert len(final["batches"]) == 6

    # And every worker did part of the work: tasks of the job ran on all three hosts
    stop_all(workers)
    logs = {w.name: w.log.read_bytes() for w in workers}
    done = {
        name: Counter(m.decode() for m in TASK_DONE.findall(text)) for name, text in logs.items()
    }
    for name, counts in done.items():
        assert counts["batchline.process_result"] > 0, (name, counts)
    fleet = sum(done.values(), Counter())
    assert fleet["batchline.process_result"] >= 300
    changes = Counter(
        ln["event"]
        for text in logs.values()
        for ln in json_lines(text)
        if ln.get("job_id") == job_id
    )
    assert changes["batch.created"] == 6 and changes["results.fanned_out"] >= 6, changes

    # And each request's state change was logged once, as JSON, by the worker that made it
    seen: dict[str, str] = {}
    for name, text in logs.items():
        for line in json_lines(text):
            assert {"ts", "level", "logger", "event"} <= set(line), line
            if line.get("job_id") != job_id:
                continue
            if line["event"].startswith("batch."):
                assert line["batch_id"].startswith("msgbatch_"), line
            if line["event"] == "request.succeeded":
                assert line["batch_id"] in {b["batch_id"] for b in final["batches"]}, line
                assert line["custom_id"] not in seen, (line, seen.get(line["custom_id"]))
                seen[line["custom_id"]] = name
    assert set(seen) == {r["custom_id"] for r in reqs}
    per_worker = Counter(seen.values())
    assert set(per_worker) == set(logs), per_worker
    events = {ln["event"] for text in logs.values() for ln in json_lines(text)}
    assert {"job.created", "batch.created", "batch.ended", "job.completed"} <= events
    # No log line carries the API key
    assert all(API_KEY.encode() not in text for text in logs.values())
