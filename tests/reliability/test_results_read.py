"""Reading a batch's results as the API serves them: in any order (a fan-out that dies and
resumes on a stream in another order), from an absolute results_url on another host, and a
read that keeps failing, which blocks the chunk rather than sending anything again."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from typing import Any

import orjson

from batchline.devstack import BIN
from batchline.emulator.results import block_order
from tests.support.jobs import DEFAULTS, check_records, chunk_field, prompts
from tests.support.procs import free_port, wait_for

# A fan-out run that dies right after publishing its second slice of results: a worker
# killed mid fan-out, at a known point.
DIES_AFTER_TWO_SLICES = """
import os, sys
from batchline.pipeline import results
from workers.runtime import context

publish, slices = results._publish, []

def publish_then_die(*args, **kwargs):
    publish(*args, **kwargs)
    slices.append(1)
    if len(slices) == 2:
        os._exit(137)

results._publish = publish_then_die
job_id, number, batch_id = sys.argv[1], int(sys.argv[2]), sys.argv[3]
results.fan_out_results(context(), job_id, number, batch_id)
"""


def a_seed_that_hides_a_block() -> int:
    """A seed whose second download keeps the block where the first download's reader
    stopped (after two of three blocks) yet brings another block before it: a reader that
    resumes by position and checks the line it stopped at skips a block it never read."""
    for seed in range(1000):
        first, second = block_order(3, seed, 0), block_order(3, seed, 1)
        if first[1] == second[1] and set(first[:2]) != set(second[:2]):
            return seed
    raise AssertionError("no such seed")


def test_a_fan_out_killed_and_resumed_on_results_in_another_order_reads_every_line(
    stack_factory: Any,
) -> None:
    # Given an API that serves a batch's results in blocks of 1,000 lines, the blocks in
    # another order on every download, and no results worker yet
    st = stack_factory(
        "--processing-seconds",
        "0.3",
        "--results-order",
        "blocks",
        "--results-block-lines",
        "1000",
        "--seed",
        str(a_seed_that_hides_a_block()),
    )
    st.worker(queues=["ingest", "events"], name="ingest")
    st.worker(queues=["api"], name="api")
    st.start_hooks()
    reqs = prompts(3000)
    job_id = st.client.submit(
        reqs, defaults=DEFAULTS, on_result="hookapp.on_result", hook_queue="hooks"
    )["job_id"]
    wait_for(lambda: chunk_field(st, job_id, "state") == "ended", 60, what="the batch to end")
    batch_id = chunk_field(st, job_id, "batch_id")
    # When a fan-out dies after publishing two slices (the first download)
    died = subprocess.run(
        [sys.executable, "-c", DIES_AFTER_TWO_SLICES, job_id, "0", batch_id],
        env={**os.environ, **st.env},
        capture_output=True,
        timeout=120,
    )
    assert died.returncode == 137, died.stderr.decode()[-2000:]
    assert st.redis.client().hlen(f"bl:job:{job_id}:c:0:raw") == 2000
    # and a results worker resumes it on the second download, in another block order
    st.worker(queues=["results"], name="results")
    final = st.client.wait(job_id, timeout_s=120)
    # Then every request has its own answer, handled once, and none was sent again
    assert final["state"] == "completed"
    assert check_records(reqs, list(st.client.results(job_id))) == {"succeeded": 3000}
    r = st.redis.client()
    key = f"hooks:{job_id}:results"
    wait_for(lambda: r.llen(key) >= 3000, 30, what="every hook")
    calls = Counter(orjson.loads(x)["custom_id"] for x in r.lrange(key, 0, -1))
    assert len(calls) == 3000 and max(calls.values()) == 1
    stats = st.emulator.stats()
    assert stats["batches_created"] == 1 and stats["requests_received"] == 3000
    assert stats["batches"][0]["results_downloads"] == 2


def test_an_absolute_results_url_on_another_host_is_read_through_the_base_url(
    stack_factory: Any,
) -> None:
    # Given an API whose results_url names another host (as the real API's does, while the
    # workers reach the API through their own base URL: a gateway, a proxy)
    elsewhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    st = stack_factory("--processing-seconds", "0.3", "--results-base-url", elsewhere)
    st.worker(concurrency=2)
    reqs = prompts(40)
    sub = st.client.submit(reqs, defaults=DEFAULTS)
    final = st.client.wait(sub["job_id"], timeout_s=60)
    # Then the results came through the base URL, once
    assert final["state"] == "completed"
    assert check_records(reqs, list(st.client.results(sub["job_id"]))) == {"succeeded": 40}
    assert st.emulator.stats()["batches"][0]["results_downloads"] == 1


def test_results_that_cannot_be_read_block_the_chunk_until_an_operator_unblocks_it(
    stack_factory: Any,
) -> None:
    # Given results downloads that fail more times than fanout_max_runs allows
    st = stack_factory("--processing-seconds", "0.3", fanout_max_runs=3)
    st.worker(concurrency=2)
    st.emulator.configure(fail_next=[{"endpoint": "results", "status": 500}] * 3)
    reqs = prompts(30)
    job_id = st.client.submit(reqs, defaults=DEFAULTS)["job_id"]
    # Then after three reads the chunk is blocked, and the status says why and what to do
    blocked = wait_for(
        lambda: st.client.status(job_id)["blocked"], 60, what="the chunk to be blocked"
    )
    assert blocked[0]["reason"] == "results_unreadable"
    assert "HTTP 500" in blocked[0]["error"]
    assert blocked[0]["command"] == f"batchline unblock {job_id} --chunk 0"
    assert st.client.status(job_id)["state"] == "running"
    assert st.emulator.stats()["calls"]["results"] == 3
    assert st.emulator.stats()["requests_received"] == 30  # nothing sent again
    # When an operator unblocks it (the API answers again)
    out = subprocess.run(
        [str(BIN / "batchline"), "unblock", job_id],
        env={**os.environ, **st.env},
        capture_output=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr.decode()
    assert "chunk 0: resumed" in out.stdout.decode()
    # Then the results are read and the job completes, each request sent once
    final = st.client.wait(job_id, timeout_s=60)
    assert check_records(reqs, list(st.client.results(job_id))) == {"succeeded": 30}
    assert final["blocked"] == []
    assert st.emulator.stats()["requests_received"] == 30
