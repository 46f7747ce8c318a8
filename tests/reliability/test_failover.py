"""A Redis primary killed mid-job: a sentinel promotes its replica, the workers follow the new
primary (broker, result backend and job state alike), none exits, and the job completes
exactly, each request sent once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchline.client import Client
from batchline.settings import Settings
from tests.conftest import Stack
from tests.support.jobs import DEFAULTS, check_records, prompts
from tests.support.procs import wait_for, worker_env
from tests.support.sentinel import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "redis").start()
    yield c
    c.stop()


def test_a_failover_mid_job_loses_no_worker_and_pays_nothing_twice(
    tmp_path: Path, cluster: Cluster, emulator_factory: Any
) -> None:
    # Given a job in flight on a primary with one replica and three sentinels, and the
    # creates' intents waiting for the replica (durable_writes auto: a replica is connected)
    emu = emulator_factory("--processing-seconds", "4")
    # The look-first wait after the failover (create_settle_s, 30 s by default) is run as users
    # have it in test_redis_restart; here it would only lengthen the test.
    env = worker_env(
        cluster.url,
        emu.base_url,
        max_batch_requests=50,
        max_in_flight_requests=150,
        create_settle_s=3,
    )
    settings = Settings(redis_url=cluster.url, max_batch_requests=50)
    st = Stack(tmp_path, cluster.primary, emu, env, Client(settings))
    try:
        with st.starting():
            workers = [
                st.worker(queues=["ingest", "events"], name="ingest"),
                st.worker(queues=["api"], name="api"),
                st.worker(queues=["results"], name="results"),
            ]
        st.start_beat()
        reqs = prompts(400)
        job_id = st.client.submit(reqs, defaults=DEFAULTS)["job_id"]
        wait_for(lambda: emu.stats()["batches_created"] >= 2, 60, what="batches in flight")
        old = cluster.primary_port()
        # When the primary dies (SIGKILL) and a sentinel promotes the replica
        cluster.primary.kill()
        killed = time.monotonic()
        wait_for(lambda: cluster.primary_port() != old, 60, what="the failover")
        promoted = time.monotonic() - killed
        # Then the job completes on the new primary, every request answered and sent once
        final = st.client.wait(job_id, timeout_s=240)
        print(f"failover in {promoted:.1f} s; job done {time.monotonic() - killed:.1f} s after")
        assert final["state"] == "completed"
        assert check_records(reqs, list(st.client.results(job_id))) == {"succeeded": 400}
        stats = emu.stats()
        assert stats["requests_received"] == 400 and stats["batches_created"] == 8
        for w in workers:
            assert w.alive(), f"{w.name} exited:\n{w.log_text()[-3000:]}"
    finally:
        st.stop()
