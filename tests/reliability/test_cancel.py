"""Cancel against everything else: one atomic step against the job's completion, chunks in
every state stopped, a create that answers after the cancel canceled at once and reported."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import orjson
import pytest
import redis

from batchline.events import EventKeys, job_events
from batchline.messaging.dispatch import CeleryDispatcher
from batchline.pipeline import jobs
from batchline.pipeline.context import Context
from batchline.settings import Settings
from batchline.store import Store
from tests.support.jobs import DEFAULTS, prompts
from tests.support.procs import API_KEY, wait_for


class Interleaved(redis.Redis):
    """A Redis client that runs `hook` once, just before or just after its next command
    (loading a script aside): another worker's step landing between two steps of this one."""

    hook: Callable[[], object] | None = None
    before = False

    def execute_command(self, *args: Any, **options: Any) -> Any:
        armed = self.hook is not None and args[0] != "SCRIPT LOAD"
        if armed and self.before:
            hook, self.hook = self.hook, None
            hook()  # type: ignore[misc]
        result = super().execute_command(*args, **options)  # a missing script raises here
        if armed and self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return result


def context(st: Any, r: redis.Redis) -> Context:
    settings = Settings(redis_url=st.redis.url)
    return Context(
        settings=settings,
        store=Store(r, settings),
        dispatch=CeleryDispatcher(st.client.app, r, same_redis=True),
        client_factory=lambda: anthropic.Anthropic(
            base_url=st.emulator.base_url, api_key=API_KEY, max_retries=0
        ),
    )


def final_events(st: Any, job_id: str) -> list[str]:
    events = job_events(st.redis.client(), EventKeys("bl"), job_id)
    return [e["type"] for _, e in events if e["type"] in ("job.completed", "job.canceled")]


@pytest.mark.parametrize("lands", ["between-its-read-and-write", "just-before-it"])
def test_a_cancel_racing_the_jobs_completion_gives_one_end_one_hook_one_event(
    stack_factory: Any, lands: str
) -> None:
    # Given a job whose every request has ended, its completion not yet run (no worker
    # consumes the ingest queue, where finalize_job waits)
    st = stack_factory("--processing-seconds", "0.3")
    ingest = st.worker(queues=["ingest", "events"], name="ingest")
    st.worker(queues=["api", "results"], name="rest")
    st.start_hooks()
    job_id = st.client.submit(
        prompts(20), defaults=DEFAULTS, on_complete="hookapp.on_complete", hook_queue="hooks"
    )["job_id"]
    ingest.stop()
    wait_for(lambda: st.client.status(job_id)["counts"]["in_flight"] == 0, 60, what="every request")
    assert st.client.status(job_id)["state"] == "running"
    # When a cancel runs and another worker's completion lands in the middle of it
    racing = Interleaved.from_url(st.redis.url)
    racing.before = lands == "just-before-it"
    racing.hook = lambda: jobs.finalize_job(context(st, redis.Redis.from_url(st.redis.url)), job_id)
    jobs.cancel_job(context(st, racing), job_id)
    st.worker(queues=["ingest", "events"], name="ingest2")
    # Then the job ended once: one state, one on_complete hook, one final event
    r = st.redis.client()
    done_key = f"hooks:{job_id}:complete"
    wait_for(lambda: r.llen(done_key) >= 1, 30, what="on_complete")
    expected = "canceled" if lands == "between-its-read-and-write" else "completed"
    wait_for(lambda: final_events(st, job_id) == [f"job.{expected}"], 30, what="the final event")
    wait_for(
        lambda: not r.sismember("bl:jobs:active", job_id), 30, what="the job to leave the sweep"
    )
    assert st.client.status(job_id)["state"] == expected
    hooks = [orjson.loads(x) for x in r.lrange(done_key, 0, -1)]
    assert [h["state"] for h in hooks] == [expected]
    assert final_events(st, job_id) == [f"job.{expected}"]


def test_a_create_that_answers_after_the_cancel_is_canceled_at_once_and_reported(
    stack_factory: Any,
) -> None:
    # Given a create still under way (the API takes three seconds to answer it)
    st = stack_factory("--processing-seconds", "100", "--latency-ms", "3000")
    st.worker(concurrency=3)
    reqs = prompts(30)
    job_id = st.client.submit(reqs, defaults=DEFAULTS)["job_id"]
    r = st.redis.client()
    wait_for(lambda: r.hget(f"bl:job:{job_id}:c:0", "call") == b"live", 30, what="the create")
    # When the job is canceled before the create answers
    st.client.cancel(job_id)
    # Then the batch it made is canceled as soon as its id is known, and the job says so
    final = st.client.wait(job_id, timeout_s=90)
    assert final["state"] == "canceled"
    assert final["canceled_after_create"] == 1
    counts = final["counts"]  # the few done before the cancel reached the batch keep theirs
    assert counts["canceled"] + counts["succeeded"] == 30 and counts["canceled"] >= 25
    batch = st.emulator.stats()["batches"][0]
    assert batch["cancel_requested"] and batch["id"] == final["batches"][0]["batch_id"]
    types = [e["type"] for _, e in job_events(r, EventKeys("bl"), job_id)]
    assert "batch.canceled_after_create" in types and types[-1] == "job.canceled"


def test_a_cancel_stops_a_blocked_chunk_too(stack_factory: Any) -> None:
    # Given a job whose batch the API no longer shows (its chunk blocked)
    st = stack_factory("--processing-seconds", "30", not_found_grace_s=1)
    st.worker(concurrency=2)
    reqs = prompts(20)
    job_id = st.client.submit(reqs, defaults=DEFAULTS)["job_id"]
    r = st.redis.client()
    wait_for(lambda: r.hget(f"bl:job:{job_id}:c:0", "batch_id"), 30, what="the batch")
    st.emulator.configure(hidden_batches=[r.hget(f"bl:job:{job_id}:c:0", "batch_id").decode()])
    wait_for(lambda: st.client.status(job_id)["blocked"], 30, what="the chunk blocked")
    # When the job is canceled, then it ends canceled, nothing sent again
    st.client.cancel(job_id)
    final = st.client.wait(job_id, timeout_s=60)
    assert final["state"] == "canceled" and final["counts"]["canceled"] == 20
    assert st.emulator.stats()["requests_received"] == 20
