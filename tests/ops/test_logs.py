"""Log volume at INFO: one line per state change of a job or a batch, none per request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.jobs import DEFAULTS, check_records, prompts

REQUESTS = 3000


def test_a_worker_started_as_the_quick_start_says_logs_no_line_per_request(
    stack_factory: Any, tmp_path: Path
) -> None:
    # Given one worker on every queue with the default settings (the README's quick start)
    st = stack_factory()
    worker = st.worker(name="quick")
    log = Path(worker.log)
    start = log.stat().st_size
    # When a job of 3,000 requests runs, a few of them retried once
    reqs = prompts(REQUESTS - 10) + prompts(10, "r", " [[emulate:errored-once:overloaded_error]]")
    job_id = st.client.submit(reqs, defaults=DEFAULTS)["job_id"]
    final = st.client.wait(job_id, timeout_s=120)
    assert final["state"] == "completed"
    assert check_records(reqs, list(st.client.results(job_id))) == {"succeeded": REQUESTS}
    with open(log, "rb") as f:
        f.seek(start)
        written = f.read()
    lines = written.decode().splitlines()
    # Then the worker wrote at most one line per 100 requests, and among them each state
    # change of the job and of its batches
    print(f"{len(lines)} lines, {len(written)} bytes, {len(written) / REQUESTS:.1f} B/request")
    assert len(lines) <= REQUESTS / 100, "\n".join(lines)
    text = "\n".join(lines)
    for change in ("job.created", "batch.created", "batch.ended", "job.completed"):
        assert change in text, change
    assert not [line for line in lines if "process_result" in line or "request." in line]
