"""`batchline doctor` against real Redis, real workers and the emulator, each broken in turn."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import redis

from batchline.devstack import (
    BIN,
    RedisServer,
    free_port,
    wait_for,
)
from tests.ops.support import Flower
from tests.support.handlers import SLOW_S
from tests.support.jobs import DEFAULTS, prompts
from tests.support.procs import API_KEY, recovery_as_deployed

PASSWORD = "doctor-pass-8d2f"


def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "batchline"), "doctor", "--timeout", "1", *args],
        env={"PATH": str(BIN), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def lines(out: str) -> dict[str, str]:
    """Check name -> its whole line."""
    found = {}
    for line in out.splitlines():
        status, name, *_ = line.split()
        found[name] = line
        assert status in ("OK", "WARN", "FAIL", "SKIP"), line
    return found


def test_a_healthy_stack_passes_every_check_and_shows_no_secret(
    stack_factory: Any, tmp_path: Path
) -> None:
    # Given Redis with a password, the emulator and a worker on every queue
    server = RedisServer(tmp_path / "redis-pw", password=PASSWORD).start()
    try:
        st = stack_factory(redis=server)
        st.worker(name="doc", hostname="dochost")
        st.start_beat()
        wait_for(lambda: server.client().exists("bl:sweep:last_at"), 30, what="a sweep")
        # When doctor runs with the workers' environment
        res = doctor(st.env)
        as_json = doctor(st.env, "--json")
        # (and the compose file's worker health check, pointed at this worker and at none)
        healthy = worker_health_check(st.env, "doc@dochost")
        unhealthy = worker_health_check(st.env, "gone@dochost", timeout_s=1)
    finally:
        st.stop()
        server.stop()
    # Then every check passes, one line each, and exit code 0
    assert res.returncode == 0, res.stdout + res.stderr
    found = lines(res.stdout)
    assert list(found) == [
        "settings", "redis", "beat", "workers", "queues", "recovery", "blocked", "api"
    ]  # fmt: skip
    assert all(line.startswith("OK") for line in found.values()), res.stdout
    assert "doc@dochost" in found["workers"]
    assert "emulator at http://127.0.0.1" in found["api"]
    for q in ("ingest", "api", "results", "events"):
        assert f"{q} 1 worker(s)" in found["queues"]
    # And neither the Redis password nor the API key appears, only a masked URL
    for text in (res.stdout + res.stderr, as_json.stdout):
        assert PASSWORD not in text and API_KEY not in text
    assert "redis://:***@127.0.0.1" in found["redis"]
    report = orjson.loads(as_json.stdout)
    assert as_json.returncode == 0 and report["ok"] is True
    assert [c["status"] for c in report["checks"]] == ["ok"] * 8
    assert "1 worker(s) heartbeating" in found["recovery"]
    assert healthy == 0 and unhealthy != 0


def worker_health_check(env: dict[str, str], node: str, timeout_s: float = 10) -> int:
    """docker-compose.yml's health check of the `worker` service, run against `node`."""
    from tests.ops.test_compose import resolved

    test = resolved()["services"]["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    script = (
        test[1]
        .replace("worker@$HOSTNAME", node)
        .replace("--timeout 10", f"--timeout {timeout_s:g}")
    )
    path = f"{BIN}:{os.environ['PATH']}"
    done = subprocess.run(["sh", "-c", script], env={**env, "PATH": path}, timeout=60)
    return done.returncode


def test_no_worker_then_a_queue_nobody_consumes_then_a_refused_key(stack_factory: Any) -> None:
    # Given no worker at all, and an emulator that accepts only another key
    st = stack_factory("--api-keys", "sk-some-other-key")
    # When doctor runs
    res = doctor(st.env, "--json")
    # Then workers fail with a hint, queues are skipped, the key is refused; exit code 1
    assert res.returncode == 1
    report = {c["name"]: c for c in orjson.loads(res.stdout)["checks"]}
    assert report["workers"]["status"] == "fail"
    assert report["beat"]["status"] == "fail"  # nothing ran the sweeper
    assert "celery -A workers worker" in report["workers"]["hint"]
    assert report["queues"]["status"] == "skip"
    assert report["api"]["status"] == "fail"
    assert "refused the key (HTTP 401" in report["api"]["detail"]
    assert API_KEY not in res.stdout

    # Given then workers on every queue but api
    st.worker(queues=["ingest", "results", "events"])
    # When doctor runs again
    res = doctor(st.env)
    # Then the queues check fails, naming api and how to fix it
    assert res.returncode == 1
    found = lines(res.stdout)
    assert found["workers"].startswith("OK")
    assert found["queues"].startswith("FAIL")
    assert "nothing consumes api" in found["queues"] and "-Q api" in found["queues"]


def test_unreachable_redis_and_missing_key_are_one_line_each() -> None:
    # Given nothing listening where Redis should be, and no API key
    port = free_port()
    env = {"BATCHLINE_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{port}/0"}
    # When doctor runs
    res = doctor(env)
    # Then Redis fails (password masked), workers are skipped, the API check names the key
    assert res.returncode == 1, res.stdout
    assert "Traceback" not in res.stderr
    found = lines(res.stdout)
    assert found["redis"].startswith("FAIL")
    assert f"cannot reach redis://:***@127.0.0.1:{port}/0" in found["redis"]
    assert found["workers"].startswith("SKIP")
    assert found["api"].startswith("FAIL") and "ANTHROPIC_API_KEY is not set" in found["api"]
    assert PASSWORD not in res.stdout


def test_an_invalid_setting_is_named_without_its_value() -> None:
    res = doctor({"BATCHLINE_POLL_INTERVAL_S": "soon", "BATCHLINE_REDIS_URL": "redis://x:1/0"})
    assert res.returncode == 1
    assert res.stdout.startswith("FAIL")
    assert "BATCHLINE_POLL_INTERVAL_S" in res.stdout and "soon" not in res.stdout
    assert "Traceback" not in res.stderr


def blocked_job(r: redis.Redis, job_id: str, since: float) -> None:
    """A running job with one chunk blocked for each reason (as the pipeline records it), and
    one chunk in progress."""
    reasons = ["not_found", "overdue", "results_unreadable"]
    r.hset(f"bl:job:{job_id}", mapping={"state": "running"})
    r.sadd("bl:jobs:active", job_id)
    r.rpush(f"bl:job:{job_id}:chunks", *range(4))
    for n, reason in enumerate(reasons):
        r.hset(
            f"bl:job:{job_id}:c:{n}",
            mapping={
                "state": "blocked",
                "batch_id": f"msgbatch_{n}",
                "blocked_reason": reason,
                "blocked_at": since,
                "blocked_error": f"what the API said\nabout batch {n}",
            },
        )
    r.hset(f"bl:job:{job_id}:c:3", mapping={"state": "in_progress", "batch_id": "msgbatch_3"})


def test_a_dead_worker_and_blocked_batches_are_named_with_what_comes_next(
    stack_factory: Any,
) -> None:
    # Given a worker holding a job's next poll (a countdown) when it is killed, beat not
    # running (so nothing recovers it yet), and a job with a batch blocked for each reason
    st = stack_factory(**recovery_as_deployed())
    doomed = st.worker(queues=["api"], name="doomed", hostname="dochost")
    st.client.app.send_task(
        "batchline.poll_batch", args=("job_waits", 2, "msgbatch_w", 1), countdown=600
    )
    r = st.redis.client()
    wait_for(lambda: r.hlen("unacked") == 1 and not r.llen("api"), 20, what="the poll held")
    doomed.kill()
    killed_at = time.time()
    blocked_job(r, "job_blocked", since=1_800_000_000)

    # When doctor runs once the worker has gone silent
    def warned() -> dict[str, Any]:
        res = doctor(st.env, "--json")
        checks = orjson.loads(res.stdout)["checks"]
        recovery = next(c for c in checks if c["name"] == "recovery")
        named = recovery["status"] == "warn" and "job_waits" in recovery["detail"]
        return {"checks": checks} if named else {}

    checks = wait_for(warned, 40, interval=1, what="doctor to see the silent worker")["checks"]
    # Then it names the worker, the job and chunk waiting on it, and until when
    recovery = next(c for c in checks if c["name"] == "recovery")
    assert "job job_waits chunk(s) 2" in recovery["detail"]
    assert "1 message(s) held by worker doomed@dochost" in recovery["detail"]
    # (by its last heartbeat + worker_dead_after_s + recovery_interval_s: 20 + 15 s, or at
    # the pass after that when the last pass ran later, under load: up to one more interval)
    h, m, sec = map(int, recovery["detail"].split("handed to live workers by ")[1][:8].split(":"))
    shown_in = (h * 3600 + m * 60 + sec - killed_at % 86400) % 86400
    assert 35 - 6 <= shown_in <= 35 + 15 + 1, shown_in
    # And one line per blocked batch: job, chunk, batch, reason, since, the command to run
    blocked = [c for c in checks if c["name"] == "blocked"]
    assert [c["status"] for c in blocked] == ["warn"] * 3
    for n, c in enumerate(blocked):
        assert f"job job_blocked chunk {n} (batch msgbatch_{n})" in c["detail"]
        assert "since 2027-01-15 08:00:00Z" in c["detail"]
        assert f"`batchline unblock job_blocked --chunk {n}`" in c["hint"]
    assert blocked[0]["detail"].startswith("job job_blocked chunk 0 (batch msgbatch_0): not_found")
    assert "what the API said about batch 0" in blocked[0]["detail"]
    assert "--resend" in blocked[0]["hint"] and "--resend" in blocked[1]["hint"]
    assert "results_unreadable" in blocked[2]["detail"] and "--resend" not in blocked[2]["hint"]


def test_a_worker_too_busy_to_answer_counts_as_a_busy_consumer_not_a_missing_one(
    stack_factory: Any, tmp_path: Path
) -> None:
    # Given a results worker (solo pool, as documented) whose in-process handler waits on a
    # slow service, so its event loop cannot answer a broadcast for seconds; and Flower
    st = stack_factory()
    with st.starting():
        st.worker(name="main", hostname="dochost", queues=["ingest", "api", "events"])
        st.results_worker("results", hostname="dochost")
    flower = Flower(tmp_path, st.env, "ops", "flower-pw").start()
    both = {"main@dochost": True, "results@dochost": True}
    wait_for(lambda: flower.api("/api/workers?status=true") == both, 30, what="online")
    job_id = st.client.submit(
        prompts(4, "slow"), defaults=DEFAULTS, handler="tests.support.handlers:record"
    )["job_id"]
    wait_for(lambda: st.redis.client().llen(f"handled:{job_id}"), 60, what="handler running")
    # When doctor runs while the handler waits, and Flower is asked all the while
    busy_since = time.monotonic()
    seen: list[tuple[float, Any]] = []

    def ask_flower() -> None:
        while time.monotonic() - busy_since < SLOW_S - 1:
            seen.append((time.monotonic() - busy_since, flower.api("/api/workers?status=true")))
            time.sleep(0.5)

    asking = threading.Thread(target=ask_flower)
    asking.start()
    res = doctor(st.env)
    asking.join()
    flower.stop()
    # Then the results worker is shown busy (its heartbeat is fresh), and the results queue
    # has its consumer: nothing to restart
    found = lines(res.stdout)
    assert "results@dochost (busy: heartbeating, no answer within 1s)" in found["workers"]
    assert "main@dochost" in found["workers"] and "1 answered" in found["workers"]
    assert found["queues"].startswith("OK") and "results 1 worker(s)" in found["queues"]
    # And Flower never showed it offline (its heartbeat events come from a thread of their own)
    # (Celery's own heartbeat, on the held loop, lets Flower call a worker gone after 4 s)
    assert len(seen) >= 3 and seen[-1][0] > 5, seen
    assert all(s == both for _, s in seen), seen
    assert st.client.wait(job_id, timeout_s=60)["state"] == "completed"
