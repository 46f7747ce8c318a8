"""Real processes for tests: redis-server, the emulator and celery workers on free ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import psutil
import redis

BIN = Path(sys.executable).parent
API_KEY = "sk-test-batchline-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProcessExited(RuntimeError):
    """A process a test waits on has died: waiting longer cannot help."""


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    """Poll predicate until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except ProcessExited:
            raise
        except Exception as exc:  # noqa: BLE001 - the predicate may fail until ready
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last error: {last_exc!r}")


class RedisServer:
    """A private redis-server that a test can kill and restart on the same data."""

    def __init__(self, workdir: Path, *, appendonly: bool = False, password: str | None = None):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, **kw: Any) -> redis.Redis:
        return redis.Redis.from_url(self.url, **kw)

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is not installed (make test installs it)"
        args = [
            exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
            "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log"),
            "--daemonize", "no",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.client(socket_timeout=1).ping(), 15, what=f"redis on {self.port}")
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


class Emulator:
    """`batchline emulator` in its own process."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"emulator-{self.port}.log"
        self.args = list(args)
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Emulator:
        env = {**os.environ, **self.env}
        cmd = [str(BIN / "batchline"), "emulator", "--host", "127.0.0.1", "--port",
               str(self.port), *self.args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for(self.stats, 20, what="the emulator")
        return self

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = orjson.dumps(body) if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return orjson.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_emulator/stats")  # type: ignore[no-any-return]

    def configure(self, **faults: Any) -> dict[str, Any]:
        return self._call("POST", "/_emulator/config", faults)  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Worker:
    """A real `celery -A workers worker` process."""

    def __init__(self, workdir: Path, env: dict[str, str], *, queues: Iterable[str] | None = None,
                 name: str = "w1", concurrency: int = 2, extra: Iterable[str] = (),
                 app: str = "workers"):
        self.name = f"{name}@batchline-test"
        self.log = workdir / f"worker-{name}.log"
        self.env = env
        self.queues = list(queues) if queues else None
        self.concurrency = concurrency
        self.extra = list(extra)
        self.app = app
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Worker:
        cmd = [str(BIN / "celery"), "-A", self.app, "worker", "-n", self.name, "-l", "INFO",
               "--concurrency", str(self.concurrency), "--without-mingle", "--without-gossip",
               *self.extra]
        if self.queues:
            cmd += ["-Q", ",".join(self.queues)]
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **self.env},
                                         cwd=str(Path(__file__).resolve().parents[2]))
        if wait:
            wait_for(self.ready, 60, interval=0.1, what=f"worker {self.name}")
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def ready(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise ProcessExited(f"worker {self.name} exited:\n{self.log_text()[-3000:]}")
        with open(self.log, "rb") as f:
            f.seek(self._offset)
            return b" ready." in f.read()

    def children(self) -> list[psutil.Process]:
        if not self.proc:
            return []
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.proc.pid).children(recursive=True)
        return []

    def kill(self) -> None:
        """SIGKILL the worker and its pool: a host dying mid-task."""
        if not self.proc:
            return
        procs = [*self.children()]
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()


def worker_env(redis_url: str, emulator_url: str | None, **settings: Any) -> dict[str, str]:
    """Environment for a worker: Redis, the emulator and fast test timings."""
    env = {
        "BATCHLINE_REDIS_URL": redis_url,
        "ANTHROPIC_API_KEY": API_KEY,
        "BATCHLINE_POLL_INTERVAL_S": "0.2",
        "BATCHLINE_POLL_MAX_INTERVAL_S": "0.5",
        "BATCHLINE_POLL_JITTER": "0.1",
        "BATCHLINE_API_RETRY_BASE_S": "0.2",
        "BATCHLINE_API_RETRY_MAX_S": "1",
        "BATCHLINE_VISIBILITY_TIMEOUT_S": "10",
        "BATCHLINE_SWEEP_INTERVAL_S": "1",
        "BATCHLINE_STALL_AFTER_S": "3",
        "BATCHLINE_API_RPM": "100000",
        "BATCHLINE_SOURCE_DIR": "/",
        "PYTHONUNBUFFERED": "1",
    }
    if emulator_url:
        env["ANTHROPIC_BASE_URL"] = emulator_url
    for key, value in settings.items():
        env[f"BATCHLINE_{key.upper()}"] = value if isinstance(value, str) else orjson.dumps(
            value).decode() if not isinstance(value, (int, float)) else str(value)
    return env


def http_json(url: str, timeout: float = 10) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{url}: HTTP {exc.code}: {exc.read()[:300]!r}") from exc
