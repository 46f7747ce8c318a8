"""Redis near full (maxmemory with noeviction, as compose runs it): a job that does not fit is
refused before anything is stored, naming Redis memory; a job whose results take Redis past
Batchline's high-water mark waits, then completes exactly once memory is freed."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
import redis

from batchline.errors import JobRefused
from tests.support.jobs import DEFAULTS, prompts
from tests.support.procs import wait_for


def limit(server: Any, maxmemory: str) -> redis.Redis:
    r = server.client()
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", maxmemory)
    return r


def fill_to(r: redis.Redis, share: float) -> int:
    """Fill Redis with filler keys until `share` of its maxmemory is used; how many."""
    target = share * int(r.config_get("maxmemory")["maxmemory"])
    n = 0
    while int(r.info("memory")["used_memory"]) < target:
        r.set(f"filler:{n}", os.urandom(64 * 1024))
        n += 1
    return n


def test_a_job_that_does_not_fit_in_redis_is_refused_before_anything_is_stored(
    stack_factory: Any,
) -> None:
    # Given Redis limited to 16 MB, a quarter of it already taken
    st = stack_factory("--processing-seconds", "0.3")
    st.worker(concurrency=2)
    r = limit(st.redis, "16mb")
    r.set("someone-elses-data", os.urandom(4 * 1024 * 1024))
    before = set(r.keys("bl:*"))
    # When a job of about 12 MB of hard-to-compress prompts is submitted
    reqs = [{"custom_id": f"q{i}", "prompt": os.urandom(400).hex()} for i in range(15_000)]
    with pytest.raises(JobRefused, match="Redis memory") as refused:
        st.client.submit(reqs, defaults=DEFAULTS)
    # Then the refusal says how full Redis is, and nothing of the job was stored
    assert "maxmemory" in str(refused.value)
    stored = {k for k in set(r.keys("bl:*")) - before if k.startswith((b"bl:job", b"bl:upload"))}
    assert stored == set()
    assert st.emulator.stats()["calls"]["create"] == 0
    # And a job that fits still runs
    small = prompts(50)
    sub = st.client.submit(small, defaults=DEFAULTS)
    assert st.client.wait(sub["job_id"], timeout_s=60)["state"] == "completed"


def test_a_job_that_fills_redis_waits_and_completes_once_memory_is_freed(
    stack_factory: Any,
) -> None:
    # Given Redis limited to 64 MB and filled by others to just under Batchline's high-water
    # mark (90% of maxmemory), and a job whose results take Redis past it
    st = stack_factory("--processing-seconds", "1", max_batch_requests=1000)
    with st.starting():
        workers = [
            st.worker(queues=["ingest", "events"], name="ingest"),
            st.worker(queues=["api"], name="api"),
            st.worker(queues=["results"], name="results", concurrency=1),
        ]
    st.start_beat()
    r = limit(st.redis, "64mb")
    reqs = [{"custom_id": f"q{i}", "prompt": os.urandom(300).hex()} for i in range(4000)]
    sub = st.client.submit(reqs, defaults=DEFAULTS)
    fillers = fill_to(r, 0.88)
    # Then storing results stops at the mark and waits; the job does not end, nothing fails
    wait_for(lambda: "results.paused_for_memory" in workers[2].log_text(), 60, what="the pause")
    time.sleep(3)
    assert st.client.status(sub["job_id"])["state"] == "running"
    used = int(r.info("memory")["used_memory"])
    assert used < int(r.config_get("maxmemory")["maxmemory"])  # never full
    # When memory is freed
    r.delete(*(f"filler:{n}" for n in range(fillers)))
    # Then the job completes, every request answered once, nothing sent twice, no worker lost
    final = st.client.wait(sub["job_id"], timeout_s=180)
    assert final["state"] == "completed"
    records = {rec["custom_id"]: rec for rec in st.client.results(sub["job_id"])}
    assert len(records) == 4000 and all(rec["state"] == "succeeded" for rec in records.values())
    assert all(
        records[q["custom_id"]]["message"]["content"][0]["text"] == "echo: " + q["prompt"]
        for q in reqs
    )
    assert st.emulator.stats()["requests_received"] == 4000
    for w in workers:
        assert w.alive(), f"{w.name} exited:\n{w.log_text()[-3000:]}"
