"""`batchline doctor` against real Redis, real workers and the emulator, each broken in turn."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import orjson

from batchline.localstack import BIN, RedisServer, free_port, wait_for
from tests.support.procs import API_KEY

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
    assert list(found) == ["settings", "redis", "beat", "workers", "queues", "api"]
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
    assert [c["status"] for c in report["checks"]] == ["ok"] * 6
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
