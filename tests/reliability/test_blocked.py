"""A batch the API no longer shows, or that runs past its expiry, is never sent again on a
guess: its chunk is blocked and shown, the sweep looks again, and an operator decides."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from batchline.devstack import BIN
from batchline.emulator.wire import key_id
from batchline.events import EventKeys, job_events
from tests.support.jobs import DEFAULTS, check_records, chunk_field, prompts
from tests.support.procs import API_KEY, wait_for

STAGING_KEY = "sk-test-staging-workspace-1122334455"


def polled(st: Any, job_id: str, chunks: int) -> bool:
    return all(int(chunk_field(st, job_id, "poll_step", n) or 0) >= 1 for n in range(chunks))


def batchline(st: Any, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(BIN / "batchline"), *args],
        env={**os.environ, **st.env},
        capture_output=True,
        timeout=120,
    )


def test_batches_that_answer_404_after_a_key_swap_are_blocked_then_found_again(
    stack_factory: Any,
) -> None:
    # Given a job whose two batches are in progress at the API (a production workspace)
    st = stack_factory(
        "--processing-seconds",
        "8",
        "--workspaces",
        f"production={API_KEY};staging={STAGING_KEY}",
        max_batch_requests=40,
        # The grace for the API's transient 404 right after a create (120 s by default)
        # and the sweep's look again at a blocked batch (300 s): shortened, the test is
        # about what happens after them.
        not_found_grace_s=1,
        blocked_recheck_s=3,
    )
    st.worker(concurrency=3)
    st.start_beat()
    reqs = prompts(80)
    job_id = st.client.submit(reqs, defaults=DEFAULTS)["job_id"]
    wait_for(lambda: polled(st, job_id, 2), 30, what="both batches polled")
    # When the workers' key is swapped for a key of another workspace (the emulator moves
    # it: every batch made before answers 404 to it)
    st.emulator.configure(workspaces={"production": [STAGING_KEY], "staging": [API_KEY]})
    # Then both chunks are blocked, with the reason and the command, and nothing is sent again
    blocked = wait_for(
        lambda: len(st.client.status(job_id)["blocked"]) == 2 and st.client.status(job_id),
        30,
        what="both chunks blocked",
    )["blocked"]
    assert {b["reason"] for b in blocked} == {"not_found"}
    assert all(b["resend_command"].endswith("--resend") for b in blocked)
    keys = EventKeys("bl")
    types = [e["type"] for _, e in job_events(st.redis.client(), keys, job_id)]
    assert types.count("batch.blocked") == 2
    assert st.emulator.stats()["by_key"][key_id(API_KEY)]["batches_created"] == 2
    # When the key is put back
    st.emulator.configure(workspaces={"production": [API_KEY], "staging": [STAGING_KEY]})
    # Then the sweep finds both batches again and the job completes, each request sent once
    final = st.client.wait(job_id, timeout_s=90)
    assert final["state"] == "completed" and final["blocked"] == []
    assert check_records(reqs, list(st.client.results(job_id))) == {"succeeded": 80}
    stats = st.emulator.stats()
    assert stats["batches_created"] == 2 and stats["requests_received"] == 80
    types = [e["type"] for _, e in job_events(st.redis.client(), keys, job_id)]
    assert types.count("batch.unblocked") == 2


def test_an_operator_resends_a_batch_the_api_no_longer_shows_after_trying_to_cancel_it(
    stack_factory: Any,
) -> None:
    # Given a job whose batch the API stops showing (deleted elsewhere, say)
    st = stack_factory("--processing-seconds", "30", not_found_grace_s=1)
    st.worker(concurrency=2)
    reqs = prompts(30)
    job_id = st.client.submit(reqs, defaults=DEFAULTS)["job_id"]
    wait_for(lambda: polled(st, job_id, 1), 30, what="the batch polled")
    gone = chunk_field(st, job_id, "batch_id")
    st.emulator.configure(hidden_batches=[gone], processing_seconds=0.3)
    wait_for(lambda: st.client.status(job_id)["blocked"], 30, what="the chunk blocked")
    assert st.emulator.stats()["batches_created"] == 1
    # When an operator asks for its requests to be sent again
    out = batchline(st, "unblock", job_id, "--chunk", "0", "--resend")
    assert out.returncode == 0, out.stderr.decode()
    assert "chunk 0: resent" in out.stdout.decode()
    # Then a cancel was tried first (answered 404: the batch is gone), then the requests
    # were sent once more, and the job completes with one answer each
    final = st.client.wait(job_id, timeout_s=60)
    assert check_records(reqs, list(st.client.results(job_id))) == {"succeeded": 30}
    calls = st.emulator.calls()
    cancel = [c for c in calls if c["endpoint"] == "cancel"]
    creates = [c for c in calls if c["endpoint"] == "create"]
    assert [c["status"] for c in cancel] == [404]
    assert len(creates) == 2 and cancel[0]["t"] < creates[1]["t"]
    assert [b["status"] for b in final["batches"]] == ["done", "done"]


def test_a_batch_in_progress_past_its_expiry_is_canceled_before_its_requests_go_again(
    stack_factory: Any,
) -> None:
    # Given a batch that stays in progress past its expiry (the API ends every batch by
    # then; this one does not)
    st = stack_factory(
        "--processing-seconds",
        "100",
        "--expiry-seconds",
        "3",
        # How long past its expiry a batch may run before it is canceled (an hour by
        # default): shortened, the test is about what comes after.
        overdue_grace_s=2,
    )
    st.worker(concurrency=2)
    st.emulator.configure(stall_next_create=1)
    reqs = prompts(30)
    job_id = st.client.submit(reqs, defaults=DEFAULTS)["job_id"]
    # Then it is canceled first; its requests that did not run go again in a new batch
    wait_for(lambda: st.emulator.stats()["batches"][0]["cancel_requested"], 60, what="the cancel")
    st.emulator.configure(processing_seconds=0.3)
    final = st.client.wait(job_id, timeout_s=60)
    assert check_records(reqs, list(st.client.results(job_id))) == {"succeeded": 30}
    calls = st.emulator.calls()
    cancel = [c["t"] for c in calls if c["endpoint"] == "cancel"]
    creates = [c["t"] for c in calls if c["endpoint"] == "create"]
    assert len(creates) == 2 and cancel and cancel[0] < creates[1]
    assert [b["attempt"] for b in final["batches"]] == [1, 2]
