"""SIGKILL of a worker (the whole host: main process and pool) at each stage, then a restart:
every custom_id ends once, on_result runs once per custom_id, no batch is made twice."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from batchline.devstack import RESULTS_WORKER_ARGS, RESULTS_WORKER_ENV
from tests.support.jobs import DEFAULTS, check_records, chunk_field, prompts
from tests.support.jobs import submit_with_hooks as submit
from tests.support.procs import Worker, wait_for, worker_env


def start(stack_factory: Any, *emulator_args: str, **settings: Any) -> Any:
    """A stack with one worker per stage and a hook receiver on its own queue."""
    st = stack_factory(*emulator_args, **settings)
    with st.starting():
        st.ingest = st.worker(queues=["ingest", "events"], name="ingest")
        st.api = st.worker(queues=["api"], name="api")
        st.results = st.worker(queues=["results"], name="results", concurrency=1)
        st.start_hooks()
    st.start_beat()
    return st


def restart(st: Any, worker: Worker) -> Worker:
    worker.kill()
    fresh = Worker(
        st.tmp,
        worker.env,
        queues=worker.queues,
        name=worker.name.split("@")[0] + "b",
        concurrency=worker.concurrency,
        extra=worker.extra,
    )
    st.workers.append(fresh.start())
    return fresh


def check_exactly_once(st: Any, job_id: str, reqs: list[dict[str, Any]]) -> Counter[str]:
    final = st.client.wait(job_id, timeout_s=120)
    assert final["state"] == "completed"
    states = check_records(reqs, list(st.client.results(job_id)))
    r = st.redis.client()
    key = f"hooks:{job_id}:results"
    wait_for(lambda: r.llen(key) >= len(reqs), 30, what="every hook")
    calls = Counter(orjson.loads(x)["custom_id"] for x in r.lrange(key, 0, -1))
    assert calls == Counter({q["custom_id"]: 1 for q in reqs}), calls.most_common(3)
    stats = st.emulator.stats()
    digests = [b["custom_ids_digest"] for b in stats["batches"]]
    assert len(digests) == len(set(digests)), "the same requests were sent twice"
    assert stats["batches_created"] == len(final["batches"])
    return states


def test_kill_during_create(stack_factory: Any) -> None:
    st = start(
        stack_factory,
        "--processing-seconds",
        "0.5",
        "--latency-ms",
        "1500",
        max_batch_requests=100,
        # A create whose worker died is looked for after create_settle_s (30 s by default,
        # the wait test_create_once runs with); here it would only lengthen the test.
        create_settle_s=3,
    )
    reqs = prompts(300)
    job_id = submit(st, reqs)
    wait_for(lambda: chunk_field(st, job_id, "state") == "creating", 20, what="a create")
    restart(st, st.api)
    st.emulator.configure(latency_ms=0)
    assert check_exactly_once(st, job_id, reqs) == {"succeeded": 300}


def test_kill_during_polling(stack_factory: Any) -> None:
    st = start(stack_factory, "--processing-seconds", "5", max_batch_requests=100)
    reqs = prompts(300)
    job_id = submit(st, reqs)
    wait_for(
        lambda: all(int(chunk_field(st, job_id, "poll_step", n) or 0) >= 1 for n in range(3)),
        30,
        what="polls under way",
    )
    restart(st, st.api)
    assert check_exactly_once(st, job_id, reqs) == {"succeeded": 300}


@pytest.mark.parametrize("stage", ["fan-out", "processing", "processing-without-ack-emulation"])
def test_kill_during_results(stack_factory: Any, stage: str) -> None:
    st = start(stack_factory, "--processing-seconds", "0.5")
    if stage == "processing-without-ack-emulation":
        # The results worker as deployed for speed: what it held dies with it, unacked
        # nowhere; the sweep republishes those results.
        st.results.kill()
        st.results = st.worker(
            queues=["results"],
            name="fast",
            concurrency=1,
            extra=RESULTS_WORKER_ARGS,
            env=RESULTS_WORKER_ENV,
        )
    reqs = prompts(2000) + prompts(20, "once", " [[emulate:errored-once:overloaded_error]]")
    job_id = submit(st, reqs)

    def midway() -> bool:
        if stage == "fan-out":
            return bool(chunk_field(st, job_id, "fanout_started_at")) and not chunk_field(
                st, job_id, "fanout_done"
            )
        return 100 < int(chunk_field(st, job_id, "processed") or 0) < 1500

    wait_for(midway, 60, interval=0.005, what=f"{stage} under way")
    restart(st, st.results)
    assert check_exactly_once(st, job_id, reqs) == {"succeeded": 2020}


def test_a_worker_without_ack_emulation_warns_when_it_serves_more_than_results(
    redis_server: Any, worker_factory: Any
) -> None:
    env = {**worker_env(redis_server.url, None), **RESULTS_WORKER_ENV}
    mixed = worker_factory(env, queues=["results", "ingest"], name="mixed")
    results_only = worker_factory(env, queues=["results"], name="only", extra=RESULTS_WORKER_ARGS)
    warned = [line for line in mixed.log_text().splitlines() if "worker.ack_emulation_off" in line]
    assert len(warned) == 1 and "queues=ingest" in warned[0]
    assert "ack_emulation_off" not in results_only.log_text()


def test_a_finalizer_that_dies_before_sending_on_complete_leaves_it_to_the_sweep(
    stack_factory: Any,
) -> None:
    # Given a job that completed and sent its on_complete hook once
    st = stack_factory()
    st.worker()
    st.start_beat()
    st.start_hooks()
    sub = st.client.submit(
        prompts(5), defaults=DEFAULTS, on_complete="hookapp.on_complete", hook_queue="hooks"
    )
    job_id = sub["job_id"]
    st.client.wait(job_id, timeout_s=60)
    r = st.redis.client()
    done_key = f"hooks:{job_id}:complete"
    wait_for(lambda: r.llen(done_key) == 1, 30, what="the on_complete hook")
    store = st.client.store
    keys = store.keys(job_id)
    wait_for(lambda: not r.sismember(store.fleet.active_jobs, job_id), 30, what="the job to go")
    # When the job is finalized again by a worker that dies right after the FINALIZE script
    # (its on_complete mark recorded, the hook never sent)
    r.hset(keys.job, "state", "running")
    r.sadd(store.fleet.active_jobs, job_id)
    final = store.scripts.finalize(
        keys=[keys.job, store.fleet.active_jobs, keys.hooks_pending, store.fleet.stats,
              keys.hooks_sending],
        args=[store.now(), job_id, "1"],
    )  # fmt: skip
    assert final == b"completed"
    # Then the job stays where the sweep looks, the sweep sends the hook once the broker's
    # redelivery window has passed, and only then lets the job go
    assert r.sismember(store.fleet.active_jobs, job_id)
    wait_for(lambda: r.llen(done_key) == 2, 60, what="the sweep to send on_complete")
    wait_for(lambda: not r.sismember(store.fleet.active_jobs, job_id), 30, what="the job to go")
    assert r.zcard(keys.hooks_pending) == 0 and r.zcard(keys.hooks_sending) == 0
