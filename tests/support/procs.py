"""Test helpers on top of batchline.devstack: fast timings, pool processes, HTTP reads."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import orjson
import psutil

from batchline.devstack import (  # noqa: F401 - re-exported for tests
    Beat,
    Emulator,
    ProcessExited,
    RedisServer,
    Worker,
    free_port,
    stack_env,
    stop_all,
    wait_for,
)
from batchline.settings import Settings

API_KEY = "sk-test-batchline-0123456789"

# Timings that make a retry cycle take milliseconds, set through configuration.
FAST = {
    "poll_interval_s": 0.2,
    "poll_max_interval_s": 0.5,
    "poll_jitter": 0.1,
    "api_retry_base_s": 0.2,
    "api_retry_max_s": 1,
    "visibility_timeout_s": 10,
    "sweep_interval_s": 1,
    "stall_after_s": 3,
    "lease_s": 5,
    "api_timeout_s": 10,
    "api_rpm": 100000,
    "source_dir": "/",
}


def as_deployed(*names: str) -> dict[str, Any]:
    """These settings back at Batchline's own defaults, undoing FAST where a test measures
    what a user meets with them (the broker's visibility timeout, leases)."""
    return {name: Settings.model_fields[name].default for name in names}


def recovery_as_deployed() -> dict[str, Any]:
    """Everything that decides how soon a dead worker's work comes back, at Batchline's
    defaults: the broker's visibility timeout (an hour), leases, the stall window the default
    polls give, and the recovery pass's interval. A test of recovery runs with these, so it
    meets the wait a user meets, and only the recovery pass can bring the work back."""
    return {
        **as_deployed("visibility_timeout_s", "lease_s", "recovery_interval_s"),
        "stall_after_s": Settings().stall_s,
    }


def worker_env(redis_url: str, emulator_url: str | None, **settings: Any) -> dict[str, str]:
    """Environment for a test worker: Redis, the emulator and fast timings."""
    return stack_env(redis_url, emulator_url, api_key=API_KEY, **{**FAST, **settings})


def pool_processes(worker: Worker) -> list[psutil.Process]:
    """The worker's pool (child) processes."""
    if worker.proc is None:
        return []
    try:
        return psutil.Process(worker.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def http_json(url: str, timeout: float = 10, headers: dict[str, str] | None = None) -> Any:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{url}: HTTP {exc.code}: {exc.read()[:300]!r}") from exc
