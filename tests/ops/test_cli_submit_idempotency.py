"""`batchline submit` when no worker answers: what it says, and that running it again is safe."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import orjson

from batchline.devstack import BIN, wait_for
from tests.support.jobs import check_records, prompts

QUEUED = re.compile(r"job (job_[0-9a-f]+) may still be queued: it will run when a worker comes up")


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "batchline"), *args],
        env={"PATH": str(BIN), **env},
        capture_output=True,
        text=True,
        timeout=90,
    )


def one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert res.stdout == "", res.stdout
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr
    return res.stderr


def test_a_timed_out_submit_says_it_may_still_run_and_running_it_again_is_safe(
    stack_factory: Any, tmp_path: Path
) -> None:
    # Given a stack with no worker up
    st = stack_factory()
    reqs = prompts(12)
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in reqs))
    submit = ("submit", str(src), "--model", "claude-haiku-4-5", "--max-tokens", "64")

    # When a submit gives up waiting for a worker
    err = one_line_error(run(st.env, *submit, "--timeout", "1"))
    # Then it names the job, says it may still run, how to see and cancel it, and that
    # running it again is safe
    found = QUEUED.search(err)
    assert found, err
    job_id = found.group(1)
    for part in (
        "no worker answered batchline.submit_job within 1s",
        f"`batchline status {job_id}` shows it once a worker has taken it",
        f"`batchline cancel {job_id}` then cancels it",
        "running the same submit again will not create a second job",
    ):
        assert part in err, (part, err)
    # And a --new submit, which cannot be repeated safely as it is, says how to
    err = one_line_error(run(st.env, *submit, "--new", "--timeout", "1"))
    found = QUEUED.search(err)
    assert found, err
    fresh_id = found.group(1)
    assert fresh_id != job_id
    assert f"to try again without a second job, submit with --job-id {fresh_id}" in err

    # When the queued job is canceled before any worker took its submit
    err = one_line_error(run(st.env, "cancel", job_id))
    # Then nothing crashes, and it says what happened
    assert f"no job '{job_id}', so nothing was canceled" in err, err
    assert "its submit is still queued for a worker" in err, err

    # When a worker comes up and the same submit is run again
    st.worker()
    again = run(st.env, *submit, "--wait")
    # Then it is the same job, and it completes
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == job_id
    assert f"{job_id} completed: 12/12 done" in again.stderr, again.stderr
    check_records(reqs, list(st.client.results(job_id)))
    # And --new makes a job of its own; --new with --job-id is a usage error
    new = orjson.loads(run(st.env, *submit, "--new", "--json").stdout)
    assert not new["existing"] and new["job_id"] not in (job_id, fresh_id)
    both = run(st.env, *submit, "--new", "--job-id", "nightly-1")
    assert both.returncode == 2 and "give --job-id or --new, not both" in both.stderr

    # And in all, three jobs ran, each request of each once
    def three_ended() -> bool:
        jobs = st.client.jobs()
        return len(jobs) == 3 and all(j["state"] == "completed" for j in jobs)

    wait_for(three_ended, 60, what="three jobs to complete")
    assert {j["job_id"] for j in st.client.jobs()} == {job_id, fresh_id, new["job_id"]}
    assert st.emulator.stats()["requests_received"] == 36
