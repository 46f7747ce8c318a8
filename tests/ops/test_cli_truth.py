"""What the command line tells an operator is true: phase, rate and ETA, requests retried,
final cost, top failure reasons, exit codes and the `jobs` table."""

from __future__ import annotations

import gc
import re
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import orjson
import pytest

from batchline.cli.main import EXIT_CANCELED, EXIT_FAILED, EXIT_OK, job_exit_code
from batchline.cli.progress import RateMeter, pace, phase, snapshot, summary_line
from batchline.client import Client
from batchline.devstack import BIN, wait_for
from batchline.pipeline.status import top_failure_reasons
from batchline.settings import Settings
from tests.conftest import Stack
from tests.ops.test_cli import cli, on_a_terminal, write_jsonl
from tests.support.jobs import check_records, prompts
from tests.support.procs import Emulator, RedisServer, worker_env

MODEL = ("--model", "claude-haiku-4-5", "--max-tokens", "16")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
RATE_AND_ETA = re.compile(r"\d+\.\d requests/s \(last 30 s\), ETA \d+:\d\d:\d\d")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One Redis, emulator and worker for the whole module (each test submits its own job)."""
    tmp = tmp_path_factory.mktemp("cli-truth")
    server = RedisServer(tmp / "redis").start()
    emu = Emulator(tmp, "--processing-seconds", "0.3").start()
    st = Stack(
        tmp,
        server,
        emu,
        worker_env(server.url, emu.base_url),
        Client(Settings(redis_url=server.url)),
    )
    try:
        st.worker()
        yield st
    finally:
        st.stop()
        gc.collect()  # let the client's Celery results go while Redis still answers
        emu.stop()
        server.stop()


def status_of(stack: Stack, job_id: str) -> dict[str, Any]:
    return stack.client.status(job_id)


def seed_counters(stack: Stack, job_id: str, retried: int, failed: Counter[str]) -> None:
    """The job's `retried_requests` and `failed:<type>` counters as the results workers keep
    them, written here only where the workers wrote none, with the values the records show
    (where the workers do keep them, the assertions below check their values)."""
    r = stack.redis.client()
    key = f"bl:job:{job_id}"
    r.hsetnx(key, "retried_requests", retried)
    for error_type, n in failed.items():
        r.hsetnx(key, f"failed:{error_type}", n)


# --- end to end, on the module's stack ---


def test_a_job_with_failed_requests_exits_3_and_names_its_top_failure_reasons(
    stack: Stack, tmp_path: Path
) -> None:
    # Given a job where 3 requests fail for good, 2 fail after every attempt, 1 succeeds
    # when sent again and the rest succeed at once
    reqs = (
        prompts(14, "ok")
        + prompts(3, "bad", " [[emulate:errored:invalid_request_error]]")
        + prompts(2, "down", " [[emulate:errored:api_error]]")
        + prompts(1, "busy", " [[emulate:errored-once:overloaded_error]]")
    )
    src = write_jsonl(tmp_path / "failing.jsonl", reqs)

    # When it is submitted with --wait (off a terminal)
    res = cli(stack.env, "submit", str(src), *MODEL, "--max-attempts", "3", "--wait", "--new")

    # Then the command exits 3, names the failure reasons at the end, the job id last
    assert res.exit_code == EXIT_FAILED, res.stderr
    job_id = res.stdout.strip().splitlines()[-1]
    assert "top failure reasons: " in res.stderr.splitlines()[-1], res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith(job_id)]
    # and a running job's lines say "cost so far" and how fast it goes, the last one "cost"
    assert any("cost so far $" in ln and ", ETA " in ln for ln in lines[:-1]), lines
    assert lines[-1].startswith(f"{job_id} completed: 20/20 done"), lines[-1]
    assert "cost $" in lines[-1] and "so far" not in lines[-1] and "ETA" not in lines[-1]

    records = list(stack.client.results(job_id))
    states = check_records(reqs, records)
    assert (states["succeeded"], states["failed"]) == (15, 5)
    failed = Counter(rec["error"]["type"] for rec in records if rec["state"] == "failed")
    assert failed == {"invalid_request_error": 3, "api_error": 2}
    st = status_of(stack, job_id)
    assert st["retried"] == 5  # sends: 2 requests twice, 1 once
    seed_counters(stack, job_id, retried=3, failed=failed)

    # And status says so too, with distinct requests retried and the final cost, exiting 3
    out = cli(stack.env, "status", job_id)
    assert out.exit_code == EXIT_FAILED, out.stderr
    head, reasons = out.stdout.splitlines()[:2]
    assert head.startswith(f"{job_id} completed: 20/20 done (100%)")
    assert "; 3 requests retried;" in head and "cost $" in head and "so far" not in head
    assert reasons == "top failure reasons: invalid_request_error 3, api_error 2"
    assert "done" in out.stdout.splitlines()[2]  # the batch lines follow
    js = cli(stack.env, "status", job_id, "--json")
    assert js.exit_code == EXIT_FAILED
    st = orjson.loads(js.stdout)
    assert st["retried_requests"] == 3
    assert st["failure_reasons"] == [
        {"error_type": "invalid_request_error", "count": 3},
        {"error_type": "api_error", "count": 2},
    ]


def test_a_job_that_succeeded_exits_0_and_jobs_lists_it_under_a_header(
    stack: Stack, tmp_path: Path
) -> None:
    # Given a job whose every request succeeds, submitted with --wait
    reqs = prompts(8, "fine")
    src = write_jsonl(tmp_path / "fine.jsonl", reqs)
    res = cli(stack.env, "submit", str(src), *MODEL, "--wait", "--new")
    # Then it exits 0, with no failure reasons
    assert res.exit_code == EXIT_OK, res.stderr
    job_id = res.stdout.strip().splitlines()[-1]
    assert "failure reasons" not in res.stderr
    out = cli(stack.env, "status", job_id)
    assert out.exit_code == EXIT_OK
    assert "failure reasons" not in out.stdout
    assert "; 0 requests retried;" in out.stdout and "so far" not in out.stdout

    # When the jobs are listed
    table = cli(stack.env, "jobs")
    listed = orjson.loads(cli(stack.env, "jobs", "--json").stdout)
    # Then a header row comes first and every row splits into its columns
    rows = [line.split() for line in table.stdout.splitlines()]
    assert rows[0] == [
        "JOB",
        "STATE",
        "SUBMITTED",
        "TOTAL",
        "SUCCEEDED",
        "FAILED",
        "CANCELED",
        "IN_FLIGHT",
        "COST_USD",
    ]
    assert [r[0] for r in rows[1:]] == [j["job_id"] for j in listed]
    assert all(len(r) == len(rows[0]) for r in rows)
    mine = next(r for r in rows if r[0] == job_id)
    job = next(j for j in listed if j["job_id"] == job_id)
    assert mine[1] == "completed" and mine[3:6] == ["8", "8", "0"]
    assert float(mine[8]) == pytest.approx(job["cost_usd"], abs=1e-4) and job["cost_usd"] > 0


def test_a_canceled_job_exits_4_and_a_running_one_0(stack: Stack, tmp_path: Path) -> None:
    # Given a job whose batch stays at the API until canceled, watched by submit --wait
    stack.emulator.configure(stall_next_create=1)
    job_id = f"cli-truth-cancel-{uuid.uuid4().hex[:8]}"
    src = write_jsonl(tmp_path / "stalled.jsonl", prompts(6, "stall"))
    log = tmp_path / "submit.err"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [str(BIN / "batchline"), "submit", str(src), *MODEL, "--job-id", job_id, "--wait"],
            env={"PATH": str(BIN), **stack.env},
            stdout=subprocess.PIPE,
            stderr=err,
        )
        try:
            wait_for(lambda: _batch_states(stack, job_id) == ["in_progress"], 30, what="the batch")
            # When its status is asked while it runs
            running = cli(stack.env, "status", job_id)
            # Then it exits 0, says the batch is at the API and what was spent so far
            assert running.exit_code == EXIT_OK, running.stderr
            head = running.stdout.splitlines()[0]
            assert head.startswith(f"{job_id} running, 1 batch at the API: 0/6 done"), head
            assert "cost so far $" in head
            assert "at the API" in running.stdout.splitlines()[1]

            # When the job is canceled
            stack.client.cancel(job_id)
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # Then submit --wait and status exit 4
    assert code == EXIT_CANCELED, log.read_text()
    assert proc.stdout is not None and proc.stdout.read().decode().strip() == job_id
    after = cli(stack.env, "status", job_id)
    assert after.exit_code == EXIT_CANCELED
    assert after.stdout.startswith(f"{job_id} canceled: 6/6 done")


def test_watch_on_a_terminal_shows_phase_rate_eta_and_the_final_cost(stack: Stack) -> None:
    # Given a job whose results take seconds to read, with 4 requests sent again after
    # the first batch, so most of the job is done while the rest is still at the API
    reqs = prompts(26, "watch") + prompts(4, "again", " [[emulate:errored-once:overloaded_error]]")
    stack.emulator.configure(results_lines_per_s=10)
    try:
        job_id = stack.client.submit(
            reqs, defaults={"model": "claude-haiku-4-5", "max_tokens": 16}, fresh=True
        )["job_id"]
        # When someone watches it on a terminal from the start
        code, screen = on_a_terminal(stack.env, "status", job_id, "--watch", timeout=60)
    finally:
        stack.emulator.configure(results_lines_per_s=0)
    assert code == EXIT_OK, screen
    text = ANSI.sub("", screen)
    # Then the live view says when results are being read, before any is recorded
    assert "reading results of 1 batch (0/30 recorded)" in text, text[-3000:]
    # and, once requests finish, how fast and how long is left
    assert RATE_AND_ETA.search(text), text[-3000:]
    assert "so far" in text
    # and the last frame is the final one: the cost, no ETA, no "so far"
    final = text[text.rindex(f"job {job_id}") :]
    final = final[: final.index(f"{job_id} completed:")]  # the summary on stdout follows
    assert "completed" in final and "30/30 100%" in final
    assert "cost $" in final and "so far" not in final and "ETA" not in final
    assert "on average" in final


def _batch_states(stack: Stack, job_id: str) -> list[str]:
    try:
        return [b["status"] for b in status_of(stack, job_id)["batches"]]
    except Exception:  # not ingested yet
        return []


# --- the wording and the numbers, without a stack ---


def _status(state: str = "running", **over: Any) -> dict[str, Any]:
    st: dict[str, Any] = {
        "job_id": "job_t",
        "state": state,
        "counts": {
            "total": 100,
            "succeeded": 40,
            "failed": 0,
            "canceled": 0,
            "rejected": 0,
            "in_flight": 60,
        },
        "batches": [],
        "submitted_at": time.time() - 20,
        "ended_at": None,
        "cost_usd": 0.5,
        "estimated_cost_usd": 2.0,
        "retried": 9,
        "retried_requests": 4,
        "failure_reasons": [],
    }
    st.update(over)
    return st


def _batch(status: str, requests: int = 50, processed: int = 0, attempt: int = 1) -> dict[str, Any]:
    return {
        "chunk": 0,
        "batch_id": "msgbatch_x",
        "attempt": attempt,
        "status": status,
        "requests": requests,
        "processed": processed,
    }


def test_the_rate_counts_requests_finished_over_the_last_30_seconds() -> None:
    meter = RateMeter()
    assert meter.rate() is None
    meter.add(0, now=100.0)
    meter.add(0, now=100.5)
    assert meter.rate() is None  # half a second says nothing yet
    meter.add(50, now=110.0)
    assert meter.rate() == pytest.approx(5.0)
    meter.add(350, now=140.0)  # 300 more in the 30 s since 110
    assert meter.rate() == pytest.approx(10.0)
    meter.add(350, now=175.0)  # nothing in the last 35 s
    assert meter.rate() == 0.0


def test_pace_gives_the_eta_at_the_rate_and_an_average_once_finished() -> None:
    running = snapshot(_status())
    assert pace(running, 2.0) == "2.0 requests/s (last 30 s), ETA 0:00:30"
    assert pace(running, 0.0) == "0.0 requests/s (last 30 s), ETA unknown"
    assert pace(running, None) == "measuring, ETA unknown"
    assert pace(running, 1500.0).startswith("1,500 requests/s")
    done = _status("completed", submitted_at=1000.0, ended_at=1010.0)
    done["counts"].update(succeeded=100, in_flight=0)
    assert pace(snapshot(done), 2.0) == "10.0 requests/s on average"


def test_the_phase_tells_reading_results_from_at_the_api() -> None:
    reading = _status(batches=[_batch("ended", 50, 20), _batch("in_progress", attempt=2)])
    s = snapshot(reading)
    assert (s.batches_reading, s.batches_at_api, s.retry_batches) == (1, 1, 1)
    assert phase(s) == "reading results of 1 batch (20/50 recorded) and 1 batch at the API"
    line = summary_line(reading)
    assert line.startswith("job_t running, reading results of 1 batch (20/50 recorded) and")
    assert "1 at the API, 1 reading results, 0 waiting, 1 retry" in line
    assert "; 4 requests retried;" in line  # distinct requests, not the 9 sends
    assert "cost so far $0.5000 (est. $" in line
    assert phase(snapshot(_status(batches=[_batch("pending")]))) == "1 batch waiting to be sent"
    assert phase(snapshot(_status("pending"))) == "validating and storing the requests"
    final = summary_line(_status("completed", batches=[_batch("done", 50, 50)]))
    assert final.startswith("job_t completed: 40/100 done")
    assert final.endswith("; cost $0.5000")


def test_top_failure_reasons_are_the_five_most_frequent_most_first() -> None:
    counted = {"a_error": 1, "b_error": 5, "c_error": 5, "d_error": 2, "e": 3, "f": 1, "g": 0}
    assert top_failure_reasons(counted) == [
        {"error_type": "b_error", "count": 5},
        {"error_type": "c_error", "count": 5},
        {"error_type": "e", "count": 3},
        {"error_type": "d_error", "count": 2},
        {"error_type": "a_error", "count": 1},
    ]
    assert top_failure_reasons({}) == []


def test_exit_codes_follow_the_job() -> None:
    failed = _status("completed")
    failed["counts"]["failed"] = 1
    running_failed = _status()
    running_failed["counts"]["failed"] = 2
    canceled_failed = _status("canceled")
    canceled_failed["counts"]["failed"] = 1
    assert job_exit_code(_status("completed")) == EXIT_OK
    assert job_exit_code(_status()) == EXIT_OK
    assert job_exit_code(failed) == EXIT_FAILED
    assert job_exit_code(running_failed) == EXIT_FAILED
    assert job_exit_code(canceled_failed) == EXIT_CANCELED
    assert job_exit_code(_status("canceling")) == EXIT_CANCELED
    assert len({EXIT_OK, EXIT_FAILED, EXIT_CANCELED, 1, 2, 130}) == 6
    helped = cli({}, "--help").stdout
    for code in ("3 ", "4 "):
        assert re.search(rf"^\s+{code}\s+submit --wait, status", helped, re.M), helped


def test_submit_wait_ends_with_the_failure_reasons_and_the_job_id() -> None:
    final = _status(
        "completed",
        failure_reasons=[
            {"error_type": "invalid_request_error", "count": 7},
            {"error_type": "expired", "count": 2},
        ],
    )
    final["counts"].update(failed=9, succeeded=91, in_flight=0)

    class Answers:
        def submit(self, *args: Any, **kw: Any) -> dict[str, Any]:
            return {"job_id": "job_t", "accepted": 100, "rejected": [], "existing": False}

        def wait(self, job_id: str, on_progress: Any = None, **kw: Any) -> dict[str, Any]:
            on_progress(final)
            return final

    with patch("batchline.cli.main._client", Answers):
        res = cli({}, "submit", __file__, "--wait")
    assert res.exit_code == EXIT_FAILED
    assert res.stdout == "job_t\n"
    assert res.stderr.splitlines()[-1] == (
        "top failure reasons: invalid_request_error 7, expired 2"
    )
