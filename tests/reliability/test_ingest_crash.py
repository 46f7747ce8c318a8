"""A worker killed anywhere inside submit_job: the broker hands the message to another worker,
which finishes the job exactly (nothing the dead one wrote is sent twice or breaks a chunk)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import orjson
import pytest

from tests.support.jobs import DEFAULTS, check_records, prompts
from tests.support.procs import wait_for

# Runs `batchline.submit_job` as a worker would, and dies (os._exit, like SIGKILL: no
# cleanup, its leases left held) at one point of the ingest. Requests are stored and cut
# into chunks a hundred at a time here (Ingest._flush, every FLUSH_EVERY requests; a
# thousand in a worker); the chunks are 200 requests.
DIE_AT = """
import os, sys
import orjson
from batchline import ingest
from batchline.pipeline import submit as submitting
from tasks.submit import submit_job

point, kwargs = sys.argv[1], orjson.loads(sys.argv[2])
ingest.FLUSH_EVERY = 100
flushes = []
flush, write_chunks = ingest.Ingest._flush, ingest.Ingest._write_chunks
job_fields = ingest.job_fields

def die():
    os._exit(137)

def dying_flush(self):
    stored = len(self.pending)
    flush(self)
    if stored:
        flushes.append(stored)
    if point == "during-the-first-chunk" and len(flushes) == 1:
        die()  # chunk 0 holds 100 of its 200 requests
    if point == "between-chunks" and len(flushes) == 2:
        die()  # chunk 0 whole, chunk 1 not begun

def dying_write_chunks(self):
    if point == "after-the-last-chunk":
        die()  # every request stored and in its chunk's list; no chunk recorded yet
    write_chunks(self)

def dying_job_fields(*args, **kw):
    if point == "before-the-job-is-ready":
        die()  # chunks recorded; the job not yet marked pending, nothing queued
    return job_fields(*args, **kw)

ingest.Ingest._flush = dying_flush
ingest.Ingest._write_chunks = dying_write_chunks
submitting.job_fields = dying_job_fields
submit_job.run(**kwargs)
"""

POINTS = [
    "during-the-first-chunk",
    "between-chunks",
    "after-the-last-chunk",
    "before-the-job-is-ready",
]


@pytest.mark.parametrize("point", POINTS)
def test_a_submit_killed_mid_ingest_is_finished_exactly_by_its_redelivery(
    stack_factory: Any, point: str
) -> None:
    # Given a 500-request job (three chunks) whose submit dies at `point`
    st = stack_factory("--processing-seconds", "0.3", max_batch_requests=200)
    reqs = prompts(500)
    upload = st.client.upload(orjson.dumps(r) for r in reqs)
    kwargs = {"upload": upload, "job_id": f"crash-{point}", "defaults": DEFAULTS}
    died = subprocess.run(
        [sys.executable, "-c", DIE_AT, point, orjson.dumps(kwargs).decode()],
        env={**os.environ, **st.env},
        capture_output=True,
        timeout=120,
    )
    assert died.returncode == 137, died.stderr.decode()[-2000:]
    job_id = kwargs["job_id"]
    assert st.client.store.job_state(job_id) == "ingesting"
    # When the broker hands the same message to a live worker (its redelivery)
    st.worker(concurrency=3)
    st.client.app.send_task("batchline.submit_job", kwargs=kwargs)
    final = st.client.wait(job_id, timeout_s=120)
    # Then the job is whole: three chunks of the right sizes, every request sent once
    assert final["state"] == "completed"
    assert check_records(reqs, list(st.client.results(job_id))) == {"succeeded": 500}
    assert [b["requests"] for b in final["batches"]] == [200, 200, 100]
    r = st.redis.client()
    assert [r.llen(f"bl:job:{job_id}:c:{n}:ids") for n in range(3)] == [200, 200, 100]
    stats = st.emulator.stats()
    assert stats["batches_created"] == 3 and stats["requests_received"] == 500
    wait_for(lambda: not r.exists(upload_key(upload)), 10, what="the upload to go")


def upload_key(upload_id: str) -> str:
    return f"bl:upload:{upload_id}"
