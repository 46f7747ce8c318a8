"""A submit retried after a timeout never makes (and pays for) a second job."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchline.client import NoWorker
from batchline.errors import JobConflict, JobRefused
from batchline.pipeline.submit import JOB_ID
from batchline.store import FINAL_JOB_STATES, JobOptions
from tests.support.jobs import DEFAULTS, check_records, prompts
from tests.support.procs import wait_for


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def settled_jobs(st: Any, timeout_s: float = 60) -> list[dict[str, Any]]:
    """Every job in the fleet once nothing is queued for ingest and each job has ended."""

    def settled() -> bool:
        listed = st.client.jobs()
        idle = st.redis.client().llen("ingest") == 0
        return idle and bool(listed) and all(j["state"] in FINAL_JOB_STATES for j in listed)

    wait_for(settled, timeout_s, what="every job to end")
    return list(st.client.jobs())


def test_a_submit_retried_after_no_worker_answered_is_one_job(
    stack_factory: Any, tmp_path: Path
) -> None:
    # Given a stack whose workers are all down
    st = stack_factory()
    reqs = prompts(40)
    src = write_jsonl(tmp_path / "in.jsonl", reqs)

    # When a submit gives up waiting for a worker (its message stays queued)
    with pytest.raises(NoWorker) as timed_out:
        st.client.submit(src, defaults=DEFAULTS, timeout_s=1.5)
    # And the user retries the same submit once a worker is back
    st.worker()
    again = st.client.submit(src, defaults=DEFAULTS, timeout_s=60)

    # Then both messages ran, yet there is one job and each request reached the API once
    jobs = settled_jobs(st)
    assert [j["job_id"] for j in jobs] == [again["job_id"]], jobs
    assert jobs[0]["state"] == "completed"
    check_records(reqs, list(st.client.results(again["job_id"])))
    stats = st.emulator.stats()
    assert (stats["batches_created"], stats["requests_received"]) == (1, 40)
    # And the error had named that job, said it may still run, and how to see or cancel it
    job_id = again["job_id"]
    assert timed_out.value.job_id == job_id
    msg = str(timed_out.value)
    for part in (
        "no worker answered batchline.submit_job within 1.5s",
        f"job {job_id} may still be queued: it will run when a worker comes up",
        f"`batchline status {job_id}`",
        f"`batchline cancel {job_id}`",
        "running the same submit again will not create a second job",
    ):
        assert part in msg, (part, msg)


def test_the_same_submit_is_the_same_job_other_options_or_fresh_are_not(
    stack: Any, tmp_path: Path
) -> None:
    reqs = prompts(10)
    src = write_jsonl(tmp_path / "in.jsonl", reqs)
    # Given a job that has completed
    first = stack.client.submit(src, defaults=DEFAULTS)
    job_id = first["job_id"]
    assert JOB_ID.match(job_id) and not first["existing"]
    stack.client.wait(job_id, timeout_s=60)

    # When the same content is submitted again: from the file, as a list of requests, and
    # with options spelled out at their defaults
    again = [
        stack.client.submit(src, defaults=DEFAULTS),
        stack.client.submit(reqs, defaults=DEFAULTS),
        stack.client.submit(src, defaults=DEFAULTS, cache=False, metadata=None),
    ]
    # Then each returns the completed job
    assert [(a["job_id"], a["existing"], a["accepted"]) for a in again] == [(job_id, True, 10)] * 3

    # When the options differ, or a new job is asked for
    other = stack.client.submit(src, defaults={**DEFAULTS, "max_tokens": 8})
    tagged = stack.client.submit(src, defaults=DEFAULTS, metadata={"run": 2})
    fresh = stack.client.submit(src, defaults=DEFAULTS, fresh=True)
    named = stack.client.submit(src, defaults=DEFAULTS, job_id="nightly-1")
    # Then each is a job of its own, and an explicit id wins
    ids = [r["job_id"] for r in (other, tagged, fresh, named)]
    assert len({job_id, *ids}) == 5 and named["job_id"] == "nightly-1"
    assert not any(r["existing"] for r in (other, tagged, fresh, named))
    assert stack.client.submit(src, defaults=DEFAULTS, fresh=True)["job_id"] not in ids
    with pytest.raises(JobRefused, match="not both"):
        stack.client.submit(src, defaults=DEFAULTS, fresh=True, job_id="nightly-1")
    jobs = settled_jobs(stack)
    assert len(jobs) == 6 and all(j["state"] == "completed" for j in jobs)
    assert stack.emulator.stats()["requests_received"] == 60


def test_a_source_the_client_cannot_read_is_named_by_its_path(
    stack_factory: Any, tmp_path: Path
) -> None:
    # Given workers that read sources from a directory this process does not look in
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    src = write_jsonl(inputs / "daily.jsonl", prompts(5))
    st = stack_factory(source_dir=str(inputs))
    st.worker()
    # When the same path is submitted twice
    first = st.client.submit_source("daily.jsonl", defaults=DEFAULTS)
    second = st.client.submit_source("daily.jsonl", defaults=DEFAULTS)
    # Then it is one job
    assert (second["job_id"], second["existing"]) == (first["job_id"], True)
    # And once the file changes, the same path is refused with what to do, until fresh
    write_jsonl(src, prompts(6))
    with pytest.raises(JobConflict, match=r"its id comes from the path .* --new \(fresh=True\)"):
        st.client.submit_source("daily.jsonl", defaults=DEFAULTS)
    fresh = st.client.submit_source("daily.jsonl", defaults=DEFAULTS, fresh=True)
    assert fresh["accepted"] == 6 and fresh["job_id"] != first["job_id"]


def test_the_derived_id_covers_every_job_option_and_nothing_else() -> None:
    from batchline.client import JOB_OPTION_DEFAULTS, derive_job_id
    from tasks.submit import submit_job

    # Every option that defines a job, with the value the task assumes when it is missing
    names = {f.name for f in dataclasses.fields(JobOptions)}
    assert set(JOB_OPTION_DEFAULTS) == names
    task = inspect.signature(submit_job.run).parameters
    for name in names:
        missing = task[name].default
        assert JOB_OPTION_DEFAULTS[name] == ({} if name == "defaults" else missing), name

    sha = "ab" * 32
    base = derive_job_id(sha, {"defaults": DEFAULTS})
    assert JOB_ID.match(base) and len(base) <= 128
    # The same job: defaults spelled out, None, key order, the job_id key itself
    assert derive_job_id(sha, {"defaults": DEFAULTS, "cache": False, "on_result": None}) == base
    assert derive_job_id(sha, {"defaults": dict(reversed(DEFAULTS.items()))}) == base
    assert derive_job_id(sha, {"defaults": DEFAULTS, "job_id": None}) == base
    # Another job: another content, or any option that defines the job
    assert derive_job_id("cd" * 32, {"defaults": DEFAULTS}) != base
    for option, value in (
        ("on_result", "svc.on_result"),
        ("on_complete", "svc.on_complete"),
        ("hook_queue", "hooks"),
        ("max_attempts", 3),
        ("metadata", {"team": "search"}),
        ("accept_invalid", True),
        ("webhook_url", "https://hooks.example.com/in"),
        ("result_events", True),
        ("max_cost_usd", 1.0),
        ("cache", True),
        ("cache_scope", "team"),
    ):
        assert derive_job_id(sha, {"defaults": DEFAULTS, option: value}) != base, option
