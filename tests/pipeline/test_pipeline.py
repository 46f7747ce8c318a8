"""End to end through real redis-server, real celery workers and the emulator (SDK over HTTP)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchline.errors import JobConflict, JobRefused
from tests.support.jobs import DEFAULTS, check_records, prompts
from tests.support.procs import wait_for


def test_3500_requests_in_chunks_of_1000_make_four_batches(stack_factory: Any) -> None:
    # Given a stack whose batches hold at most 1,000 requests
    st = stack_factory(max_batch_requests=1000)
    st.worker(concurrency=3)
    reqs = prompts(3500)
    # When a job of 3,500 requests is submitted
    sub = st.client.submit(reqs, defaults=DEFAULTS)
    final = st.client.wait(sub["job_id"], timeout_s=120)
    # Then four batches were created, each request succeeded once with its own answer
    assert sub["accepted"] == 3500
    assert final["state"] == "completed"
    assert sorted(b["requests"] for b in final["batches"]) == [500, 1000, 1000, 1000]
    assert st.emulator.stats()["batches_created"] == 4
    assert st.emulator.stats()["requests_received"] == 3500
    states = check_records(reqs, list(st.client.results(sub["job_id"])))
    assert states == {"succeeded": 3500}
    assert final["counts"]["succeeded"] == 3500 and final["counts"]["in_flight"] == 0
    assert final["usage"]["output_tokens"] > 0 and final["cost_usd"] > 0


def test_mixed_outcomes_retry_only_what_can_succeed(stack: Any) -> None:
    reqs = (
        prompts(20, "ok")
        + prompts(3, "perm", " [[emulate:errored:invalid_request_error]]")
        + prompts(3, "billing", " [[emulate:errored:billing_error]]")
        + prompts(4, "once", " [[emulate:errored-once:overloaded_error]]")
        + prompts(4, "exp", " [[emulate:expired-once]]")
        + prompts(2, "always", " [[emulate:errored:api_error]]")
        + prompts(2, "alwaysexp", " [[emulate:expired]]")
    )
    sub = stack.client.submit(reqs, defaults=DEFAULTS, max_attempts=3)
    final = stack.client.wait(sub["job_id"], timeout_s=90)
    records = {r["custom_id"]: r for r in stack.client.results(sub["job_id"])}
    check_records(reqs, list(records.values()))
    for cid, rec in records.items():
        if cid.startswith("ok"):
            assert (rec["state"], rec["attempts"]) == ("succeeded", 1)
        elif cid.startswith("perm"):
            assert rec["state"] == "failed" and rec["attempts"] == 1
            assert rec["error"]["type"] == "invalid_request_error"
        elif cid.startswith("billing"):
            assert (rec["state"], rec["error"]["type"]) == ("failed", "billing_error")
        elif cid.startswith(("once", "exp")):
            assert (rec["state"], rec["attempts"]) == ("succeeded", 2), rec
        elif cid.startswith("alwaysexp"):
            assert (rec["state"], rec["attempts"], rec["error"]["type"]) == ("failed", 3, "expired")
        else:
            assert (rec["state"], rec["attempts"], rec["error"]["type"]) == (
                "failed",
                3,
                "api_error",
            )
    assert final["counts"] == {
        "total": 38,
        "succeeded": 28,
        "failed": 10,
        "canceled": 0,
        "rejected": 0,
        "in_flight": 0,
    }
    # The first batch plus two retry batches (attempts 2 and 3).
    assert sorted(b["attempt"] for b in final["batches"]) == [1, 2, 3]
    assert final["retried"] == 8 + 4 + 4


def test_cancel_in_the_middle_of_a_job(stack_factory: Any) -> None:
    st = stack_factory("--processing-seconds", "6", max_batch_requests=50)
    st.worker(concurrency=3)
    reqs = prompts(200)
    sub = st.client.submit(reqs, defaults=DEFAULTS)
    wait_for(lambda: st.emulator.stats()["batches_created"] >= 4, 30, what="batches created")
    wait_for(lambda: st.client.status(sub["job_id"])["state"] == "running", 10)
    st.client.cancel(sub["job_id"])
    final = st.client.wait(sub["job_id"], timeout_s=60)
    assert final["state"] == "canceled"
    states = check_records(reqs, list(st.client.results(sub["job_id"])))
    # Canceled midway: requests the emulator had not reached end canceled, none retried.
    assert states["canceled"] > 0
    assert states["succeeded"] + states["canceled"] == 200
    assert st.emulator.stats()["calls"]["cancel"] >= 1
    assert final["retried"] == 0
    assert all(b["attempt"] == 1 for b in final["batches"])


def test_same_job_id_twice_is_one_job(stack: Any) -> None:
    reqs = prompts(30)
    first = stack.client.submit(reqs, defaults=DEFAULTS, job_id="nightly-2026-11-28")
    second = stack.client.submit(reqs, defaults=DEFAULTS, job_id="nightly-2026-11-28")
    assert (first["existing"], second["existing"]) == (False, True)
    assert second["job_id"] == first["job_id"] and second["accepted"] == 30
    stack.client.wait(first["job_id"], timeout_s=60)
    third = stack.client.submit(reqs, defaults=DEFAULTS, job_id="nightly-2026-11-28")
    assert third["existing"]
    assert stack.emulator.stats()["batches_created"] == 1
    assert stack.emulator.stats()["requests_received"] == 30
    # The same id with different content is refused.
    with pytest.raises(JobConflict):
        stack.client.submit(prompts(31), defaults=DEFAULTS, job_id="nightly-2026-11-28")


def test_bad_input_is_refused_with_line_and_reason_and_nothing_is_created(
    stack: Any, tmp_path: Path
) -> None:
    good = [orjson.dumps(r) for r in prompts(5)]
    lines = [
        good[0],
        b'{"custom_id": "x1", "prompt": ',
        good[1],
        b'{"custom_id": "x2", "messages": []}',
        good[2],
        b'{"custom_id": "q0", "prompt": "again"}',
        good[3],
        b'{"custom_id": "x3", "prompt": "hi", "max_tokens": 0}',
        good[4],
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(JobRefused) as err:
        stack.client.submit(path, defaults=DEFAULTS)
    msg = str(err.value)
    assert "line 2" in msg and "not valid JSON" in msg
    assert "line 4" in msg and "messages is empty" in msg
    assert "line 6" in msg and "duplicate custom_id 'q0' (first on line 1)" in msg
    assert "line 8" in msg and "max_tokens must be an integer of at least 1" in msg
    stats = stack.emulator.stats()
    assert stats["batches_created"] == 0 and stats["calls"]["create"] == 0
    # Nothing stayed behind: no job, no stored request.
    leftovers = [k for k in stack.redis.client().scan_iter("bl:job:*")]
    assert leftovers == []


def test_accept_invalid_sends_the_valid_lines_and_rejects_the_rest(stack: Any) -> None:
    reqs: list[Any] = [*prompts(4), {"custom_id": "bad", "prompt": ""}, "not an object"]
    sub = stack.client.submit(reqs, defaults=DEFAULTS, accept_invalid=True)
    assert sub["accepted"] == 4
    assert [(r["line"], r["reason"]) for r in sub["rejected"]] == [
        (5, "prompt must be a non-empty string"),
        (6, "a line must be a JSON object"),
    ]
    final = stack.client.wait(sub["job_id"], timeout_s=60)
    assert final["counts"]["rejected"] == 2 and final["counts"]["succeeded"] == 4
    ordered = list(stack.client.results(sub["job_id"], ordered=True))
    assert [r["state"] for r in ordered] == ["succeeded"] * 4 + ["rejected"] * 2
    assert [r.get("line") for r in ordered] == [1, 2, 3, 4, 5, 6]


def test_hooks_reach_another_apps_task_on_its_own_queue(stack: Any) -> None:
    stack.start_hooks()
    reqs = (
        prompts(40)
        + prompts(2, "perm", " [[emulate:errored:invalid_request_error]]")
        + prompts(3, "once", " [[emulate:errored-once:api_error]]")
    )
    sub = stack.client.submit(
        reqs,
        defaults=DEFAULTS,
        on_result="hookapp.on_result",
        on_complete="hookapp.on_complete",
        hook_queue="hooks",
    )
    stack.client.wait(sub["job_id"], timeout_s=60)
    r = stack.redis.client()
    key = f"hooks:{sub['job_id']}"
    wait_for(
        lambda: r.llen(f"{key}:complete") == 1 and r.llen(f"{key}:results") == 45,
        30,
        what="hooks delivered",
    )
    calls = [orjson.loads(x) for x in r.lrange(f"{key}:results", 0, -1)]
    assert sorted(c["custom_id"] for c in calls) == sorted(q["custom_id"] for q in reqs)
    assert sum(c["state"] == "failed" for c in calls) == 2
    complete = orjson.loads(r.lindex(f"{key}:complete", 0))
    assert complete["state"] == "completed" and complete["counts"]["succeeded"] == 43
    time.sleep(1)  # no late duplicates
    assert r.llen(f"{key}:results") == 45 and r.llen(f"{key}:complete") == 1
