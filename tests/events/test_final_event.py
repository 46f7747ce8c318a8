"""A job's final event (job.completed, job.canceled) cannot be lost: written once with the job's
end, or by the sweep when the worker that ended it died first; `events --follow` returns."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from batchline.devstack import BIN
from batchline.events import EventKeys, job_events
from tests.support.jobs import DEFAULTS, prompts
from tests.support.procs import wait_for

KEYS = EventKeys("bl")


def types(st: Any, job_id: str) -> list[str]:
    return [e["type"] for _, e in job_events(st.redis.client(), KEYS, job_id)]


def test_a_final_event_lost_with_its_worker_is_written_by_the_sweep(stack_factory: Any) -> None:
    # Given a completed job, then ended again by a worker that dies right after the state
    # change (the job marked completed, its final event never written)
    st = stack_factory("--processing-seconds", "0.3")
    st.worker(concurrency=2)
    job_id = st.client.submit(prompts(10), defaults=DEFAULTS)["job_id"]
    st.client.wait(job_id, timeout_s=60)
    wait_for(lambda: types(st, job_id)[-1:] == ["job.completed"], 30, what="job.completed")
    r = st.redis.client()
    store = st.client.store
    keys = store.keys(job_id)
    r.delete(KEYS.job(job_id))
    r.hdel(keys.job, "final_event_id")
    r.hset(keys.job, "state", "running")
    r.sadd(store.fleet.active_jobs, job_id)
    ended = store.scripts.finalize(
        keys=[keys.job, store.fleet.active_jobs, keys.hooks_pending, store.fleet.stats,
              keys.hooks_sending],
        args=[store.now(), job_id, "0"],
    )  # fmt: skip
    assert ended == b"completed" and types(st, job_id) == []
    # When `batchline events JOB --follow` watches it, with the sweep running
    follow = subprocess.Popen(
        [str(BIN / "batchline"), "events", job_id, "--follow"],
        env={**os.environ, **st.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    st.start_beat()
    # Then the sweep writes job.completed once, the job leaves the sweep, and follow returns
    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 0, err.decode()
    assert "job.completed" in out.decode()
    assert types(st, job_id) == ["job.completed"]
    wait_for(lambda: not r.sismember(store.fleet.active_jobs, job_id), 30, what="the job to go")
    assert types(st, job_id) == ["job.completed"]


def test_follow_returns_for_a_finished_job_whose_events_are_past_their_retention(
    stack_factory: Any,
) -> None:
    # Given a completed job whose event stream has expired
    st = stack_factory("--processing-seconds", "0.3")
    st.worker(concurrency=2)
    job_id = st.client.submit(prompts(5), defaults=DEFAULTS)["job_id"]
    st.client.wait(job_id, timeout_s=60)
    wait_for(lambda: types(st, job_id)[-1:] == ["job.completed"], 30, what="job.completed")
    st.redis.client().delete(KEYS.job(job_id))
    # Then following it returns at once instead of waiting forever
    follow = subprocess.run(
        [str(BIN / "batchline"), "events", job_id, "--follow"],
        env={**os.environ, **st.env},
        capture_output=True,
        timeout=30,
    )
    assert follow.returncode == 0, follow.stderr.decode()
