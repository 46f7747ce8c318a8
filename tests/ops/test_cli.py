"""The command line as people and scripts use it: progress, --json, one-line errors, Ctrl-C."""

from __future__ import annotations

import gc
import os
import pty
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from unittest.mock import patch

import orjson
from click.testing import CliRunner, Result

from batchline.cli.main import EXIT_FAILED
from batchline.devstack import BIN, free_port, wait_for
from tests.ops.support import stop_all
from tests.support.jobs import check_records, prompts

JSON_COMMANDS = ("submit", "status", "cancel", "jobs", "doctor", "demo")


def run(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "batchline"), *args],
        env={"PATH": str(BIN), **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli(env: dict[str, str], *args: str) -> Result:
    """In-process through CliRunner (never a terminal), with env as the settings' environment."""
    from batchline.cli import main
    from batchline.settings import reload_settings

    try:
        with patch.dict(os.environ, env):
            reload_settings()
            return CliRunner().invoke(main, list(args), catch_exceptions=False)
    finally:
        reload_settings()
        # Let the command's Celery results go while their Redis is still up.
        gc.collect()


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def on_a_terminal(env: dict[str, str], *args: str, timeout: float = 30) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal (stdout piped); returns exit code and the screen."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(BIN / "batchline"), *args],
        env={"PATH": str(BIN), "TERM": "xterm-256color", "COLUMNS": "100", **env},
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    proc.wait(10)
    assert proc.stdout is not None
    return proc.returncode, screen.decode(errors="replace") + proc.stdout.read().decode()


def test_submit_wait_watch_and_json(stack: Any, tmp_path: Path) -> None:
    env = stack.env
    reqs = prompts(30) + prompts(2, "perm", " [[emulate:errored:invalid_request_error]]")
    src = write_jsonl(tmp_path / "in.jsonl", reqs)

    # When a job is submitted with --wait off a terminal, read from stdin (as through
    # `docker compose exec -T worker batchline submit /dev/stdin < file`)
    res = run(
        env,
        *("submit", "/dev/stdin", "--model", "claude-haiku-4-5", "--max-tokens", "64", "--wait"),
        stdin=src.read_text(),
    )
    # Then progress comes as plain lines on stderr, the job id alone on stdout's last line,
    # and the exit code says requests failed
    assert res.returncode == EXIT_FAILED, res.stderr
    job_id = res.stdout.strip().splitlines()[-1]
    assert job_id and " " not in job_id
    progress = [ln for ln in res.stderr.splitlines() if ln.startswith(job_id)]
    assert progress, res.stderr
    assert "\x1b[" not in res.stderr  # no escape codes in a log
    last = progress[-1]
    assert last.startswith(f"{job_id} completed: 32/32 done (100%)")
    for part in (
        "30 succeeded, 2 failed, 0 canceled, 0 rejected, 0 in flight",
        "batches 1/1 closed",
    ):
        assert part in last, last
    assert "elapsed 0:00:" in last and "cost $" in last and "so far" not in last
    assert "accepted 32 request(s)" in res.stderr
    check_records(reqs, list(stack.client.results(job_id)))

    # And --json gives scripts what they need, on stdout only
    shown = cli(env, "status", job_id, "--json")
    assert shown.exit_code == EXIT_FAILED
    st = orjson.loads(shown.stdout)
    assert st["state"] == "completed" and st["counts"]["succeeded"] == 30
    listed = orjson.loads(cli(env, "jobs", "--json").stdout)
    assert [j["job_id"] for j in listed] == [job_id]
    again = cli(
        env,
        "submit",
        str(src),
        "--model",
        "claude-haiku-4-5",
        "--max-tokens",
        "8",
        "--json",
        "--wait",
    )
    assert again.exit_code == EXIT_FAILED
    sub = orjson.loads(again.stdout)
    assert sub["accepted"] == 32 and sub["status"]["state"] == "completed"
    canceled = orjson.loads(cli(env, "cancel", sub["job_id"], "--json").stdout)
    assert canceled["state"] == "completed"  # nothing left to cancel
    for cmd in JSON_COMMANDS:
        assert "--json" in cli(env, cmd, "--help").stdout, cmd

    # When watched on a terminal: live bars for requests and batches, elapsed time and cost
    code, screen = on_a_terminal(env, "status", job_id, "--watch")
    assert code == EXIT_FAILED, screen
    assert "\x1b[" in screen and "━" in screen
    for part in ("requests", "32/32 100%", "30 succeeded", "2 failed", "batches", "1/1 closed"):
        assert part in screen, part
    # (a finished job's cost is what it cost, not "so far")
    assert "elapsed" in screen and "cost" in screen and "so far" not in screen
    # And the summary still reaches stdout
    assert f"{job_id} completed: 32/32 done" in screen


def test_user_mistakes_are_one_line_and_a_non_zero_exit(stack: Any, tmp_path: Path) -> None:
    env = stack.env
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        [{"custom_id": "a", "prompt": "hi"}, {"custom_id": "a", "prompt": "again"}],
    )
    down = {**env, "BATCHLINE_REDIS_URL": f"redis://:hunter2@127.0.0.1:{free_port()}/0"}
    cases = [
        (env, ["status", "no-such-job"], "Error: no job 'no-such-job'"),
        (env, ["results", "no-such-job"], "Error: no job 'no-such-job'"),
        (env, ["cancel", "no-such-job"], "Error: no job 'no-such-job'"),
        (
            env,
            ["submit", str(bad), "--model", "claude-haiku-4-5", "--max-tokens", "8"],
            "line 2 (a): duplicate custom_id 'a' (first on line 1)",
        ),
        (env, ["submit", str(bad), "--metadata", "{nope"], "--metadata is not valid JSON"),
        (down, ["jobs"], "cannot reach Redis at redis://:***@127.0.0.1"),
        ({**env, "BATCHLINE_API_RPM": "lots"}, ["jobs"], "invalid setting BATCHLINE_API_RPM"),
    ]
    for case_env, args, expected in cases:
        # In-process where the environment is the stack's, a new process where it is not.
        res = cli(case_env, *args) if case_env is env else run(case_env, *args)
        assert (res.exit_code if isinstance(res, Result) else res.returncode) == 1, args
        assert res.stdout == "", (args, res.stdout)
        assert len(res.stderr.strip().splitlines()) == 1, (args, res.stderr)
        assert expected in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr and "hunter2" not in res.stderr
    # A missing file is a usage error (exit 2), still without a traceback
    missing = cli(env, "submit", str(tmp_path / "missing.jsonl"))
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


def test_ctrl_c_stops_watching_not_the_job(stack_factory: Any, tmp_path: Path) -> None:
    # Given a job that cannot progress (no worker on the api queue)
    st = stack_factory()
    st.worker(queues=["ingest", "results", "events"])
    job_id = st.client.submit(prompts(5), defaults={"model": "claude-haiku-4-5", "max_tokens": 8})[
        "job_id"
    ]
    log = tmp_path / "watch.err"
    # When someone watches it, then presses Ctrl-C
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [str(BIN / "batchline"), "status", job_id, "--watch"],
            env={"PATH": str(BIN), **st.env},
            stdout=subprocess.PIPE,
            stderr=err,
        )
        wait_for(lambda: job_id.encode() in log.read_bytes(), 20, what="the first progress line")
        proc.send_signal(signal.SIGINT)
        code = proc.wait(20)
    # Then the command stops with 130 and says the job goes on, which it does
    text = log.read_text()
    assert code == 130, text
    assert f"stopped watching; job {job_id} goes on" in text and "Traceback" not in text
    assert st.client.status(job_id)["state"] == "pending"
    stop_all(st.workers)
