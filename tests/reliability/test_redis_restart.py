"""kill -9 of redis-server mid-job and a restart on the same data (AOF on): nothing is lost."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.support.jobs import DEFAULTS, check_records, prompts
from tests.support.procs import wait_for


def test_redis_killed_mid_job_and_restarted_loses_nothing(
    redis_factory: Any, stack_factory: Any
) -> None:
    # Given Redis with an append-only file and a job whose batches are in flight
    server = redis_factory("aof-redis", appendonly=True)
    st = stack_factory(
        "--processing-seconds",
        "4",
        redis=server,
        max_batch_requests=100,
        # After a restart, chunks pending from before are looked for first, create_settle_s
        # after it (30 s by default, shown in the next test); here that wait only lengthens
        # the test.
        create_settle_s=5,
    )
    with st.starting():
        workers = [
            st.worker(queues=["ingest", "events"], name="ingest"),
            st.worker(queues=["api"], name="api"),
            st.worker(queues=["results"], name="results"),
        ]
    st.start_beat()
    reqs = prompts(400) + prompts(10, "once", " [[emulate:errored-once:overloaded_error]]")
    sub = st.client.submit(reqs, defaults=DEFAULTS)
    wait_for(lambda: st.emulator.stats()["batches_created"] >= 4, 30, what="batches created")
    # When redis-server is killed with SIGKILL and restarted on the same data a little later
    time.sleep(1.5)  # let polls hold countdown tasks
    server.kill()
    # (a client already waiting on the job waits through the outage)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(st.client.wait, sub["job_id"], 120)
        time.sleep(2)
        assert waiting.running()
        server.start()
        final = waiting.result()
    # Then the job completes, every request has one record, no batch was made twice
    assert final["state"] == "completed"
    states = check_records(reqs, list(st.client.results(sub["job_id"])))
    assert states == {"succeeded": 410}
    stats = st.emulator.stats()
    assert stats["batches_created"] == 6  # five chunks and one retry batch
    assert stats["requests_received"] == 420
    for w in workers:
        assert w.alive(), f"{w.name} exited:\n{w.log_text()[-3000:]}"


def test_redis_restarted_from_an_older_append_only_file_pays_nothing_twice(
    redis_factory: Any, stack_factory: Any
) -> None:
    # Given Redis with an append-only file, and a six-batch job of which two may be at the
    # API at once (so its batches are created over time)
    server = redis_factory("aof-redis", appendonly=True)
    st = stack_factory(
        "--processing-seconds",
        "3",
        redis=server,
        max_batch_requests=50,
        max_in_flight_requests=100,
    )
    with st.starting():
        workers = [
            st.worker(queues=["ingest", "events"], name="ingest"),
            st.worker(queues=["api"], name="api"),
            st.worker(queues=["results"], name="results"),
        ]
    st.start_beat()
    reqs = prompts(300)
    sub = st.client.submit(reqs, defaults=DEFAULTS)
    # When a copy of the append-only file is taken mid-job (what a host crash leaves on
    # disk: the writes after it never reached the disk), the job goes on, and Redis is then
    # restarted from that copy
    wait_for(lambda: st.emulator.stats()["batches_created"] >= 2, 60, what="two batches")
    aof = server.workdir / "appendonlydir"
    older = server.workdir / "appendonlydir-at-crash"
    shutil.copytree(aof, older)
    at_copy = st.emulator.stats()["batches_created"]
    wait_for(
        lambda: st.emulator.stats()["batches_created"] >= at_copy + 2, 60, what="two more batches"
    )
    server.kill()
    shutil.rmtree(aof)
    older.rename(aof)
    server.start()
    # Then the job completes, every request has one record, and no chunk was sent twice:
    # the chunks Redis forgot it had created were found at the API by their tags
    final = st.client.wait(sub["job_id"], timeout_s=180)
    assert final["state"] == "completed"
    assert check_records(reqs, list(st.client.results(sub["job_id"]))) == {"succeeded": 300}
    stats = st.emulator.stats()
    assert stats["batches_created"] == 6 and stats["requests_received"] == 300
    log = "".join(w.log_text() for w in workers)
    assert "batch.look_first" in log
    for w in workers:
        assert w.alive(), f"{w.name} exited:\n{w.log_text()[-3000:]}"
