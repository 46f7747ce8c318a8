"""A whole Batchline on one machine: private redis-server, the emulator, workers and beat as
child processes on free ports (used by `batchline demo`, the tests and the benchmarks)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
import redis

BIN = Path(sys.executable).parent
PROJECT_ROOT = Path(__file__).resolve().parents[1]
EMULATOR_KEY = "sk-local-emulator-key"


# Ports handed out by free_port: below the kernel's ephemeral range (Linux's default is
# 32768-60999), so an outgoing connection of any process cannot take a port between the moment
# it is chosen and the moment a server binds it, and one slice per test process (pytest-xdist
# names them gw0, gw1, ...), so two processes of one suite never choose the same port.
_PORT_BASE, _PORT_SLICE, _PORT_SLICES = 20_000, 600, 20
_ports_given: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing listens on, never handed out twice by this process."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker[2:].isdigit() else os.getpid()
    start = _PORT_BASE + (index % _PORT_SLICES) * _PORT_SLICE
    if start + _PORT_SLICE <= _ephemeral_low():
        offset = os.getpid() % _PORT_SLICE
        for step in range(_PORT_SLICE):
            port = start + (offset + step) % _PORT_SLICE
            if port not in _ports_given and _bindable(port):
                _ports_given.add(port)
                return port
    with socket.socket() as s:  # no room below the ephemeral range: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The results stage's own workers (README, Operations): solo-pool processes, one per core,
# each holding up to 64 messages (handed to process_result in groups of up to 64), without
# the broker's ack emulation (Settings.broker_ack_emulation) and without per-result log
# lines at INFO. Compose, the bench and the worker-kill test run these.
RESULTS_WORKER_ARGS = ("--pool", "solo", "--prefetch-multiplier", "64")
RESULTS_WORKER_ENV = {"BATCHLINE_BROKER_ACK_EMULATION": "false", "BATCHLINE_RESULT_LOGS": "false"}


class ProcessExited(RuntimeError):
    """A process being waited on has died: waiting longer cannot help."""


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll predicate until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except ProcessExited:
            raise
        except Exception as exc:
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last error: {last_exc!r}")


class Proc:
    """A child process in its own session, so it and its children stop together."""

    proc: subprocess.Popen[bytes] | None = None
    log: Path

    def _spawn(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
                cwd=str(PROJECT_ROOT),
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal_group(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the process and everything it started: a host dying."""
        if self.alive():
            self.signal_group(signal.SIGKILL)
            assert self.proc is not None
            self.proc.wait(10)

    def stop_gracefully(self, timeout: float = 60) -> bool:
        """SIGTERM to the main process only, as `docker stop` and Kubernetes send it, and wait:
        True if it exited by itself within timeout (else it is killed, and False)."""
        if not self.alive():
            return True
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        return True

    def stop(self, timeout: float = 15) -> None:
        if not self.alive():
            return
        self.signal_group(signal.SIGTERM)
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def stop_all(procs: list[Proc], timeout: float = 15) -> None:
    """Ask every process to stop at once, then wait for each (SIGKILL after timeout)."""
    for p in procs:
        if p.alive():
            p.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        if p.proc is None:
            continue
        try:
            p.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()


class RedisServer(Proc):
    """A private redis-server that can be killed and restarted on the same data."""

    def __init__(
        self,
        workdir: Path,
        *,
        appendonly: bool = False,
        password: str | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
    ):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password
        self.extra_args = list(extra_args)  # more redis-server options (a replica's, say)
        self.log = workdir / "redis-stdout.log"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, **kw: Any) -> redis.Redis:
        return redis.Redis.from_url(self.url, **kw)

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server is not installed (`make install-redis` or apt-get)")
        cmd = [
            exe,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--dir",
            str(self.workdir),
            "--logfile",
            str(self.workdir / "redis.log"),
            "--daemonize",
            "no",
        ]
        if self.password:
            cmd += ["--requirepass", self.password]
        self._spawn(cmd + self.extra_args)
        wait_for(lambda: self.client(socket_timeout=1).ping(), 60, what=f"redis on {self.port}")
        return self

    def restart(self) -> RedisServer:
        self.kill()
        return self.start()


class Emulator(Proc):
    """`batchline emulator` in its own process."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"emulator-{self.port}.log"
        self.args = list(args)
        self.env = env or {}

    def start(self) -> Emulator:
        self._spawn(
            [
                str(BIN / "batchline"),
                "emulator",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *self.args,
            ],
            self.env,
        )
        wait_for(self._ready, 60, what="the emulator")
        return self

    def _ready(self) -> bool:
        if not self.alive():
            raise ProcessExited(f"the emulator exited:\n{self.log_text()[-2000:]}")
        return bool(self.stats())

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = orjson.dumps(body) if body is not None else None
        req = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return orjson.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_emulator/stats")

    def calls(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_emulator/calls")

    def configure(self, **faults: Any) -> dict[str, Any]:
        return self._call("POST", "/_emulator/config", faults)


class Worker(Proc):
    """A real `celery -A workers worker` process (or another app's, with `app=`)."""

    def __init__(
        self,
        workdir: Path,
        env: dict[str, str],
        *,
        queues: Iterable[str] | None = None,
        name: str = "w1",
        concurrency: int = 2,
        extra: Iterable[str] = (),
        app: str = "workers",
        hostname: str = "batchline-local",
    ):
        self.name = f"{name}@{hostname}"
        self.log = workdir / f"worker-{name}.log"
        self.env = env
        self.queues = list(queues) if queues else None
        self.concurrency = concurrency
        self.extra = list(extra)
        self.app = app
        self._offset = 0

    def start(self, wait: bool = True) -> Worker:
        cmd = [
            str(BIN / "celery"),
            "-A",
            self.app,
            "worker",
            "-n",
            self.name,
            "-l",
            "INFO",
            "--concurrency",
            str(self.concurrency),
            "--without-mingle",
            "--without-gossip",
            *self.extra,
        ]
        if self.queues:
            cmd += ["-Q", ",".join(self.queues)]
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        self._spawn(cmd, self.env)
        if wait:
            wait_for(self.ready, 60, interval=0.1, what=f"worker {self.name}")
        return self

    def ready(self) -> bool:
        if not self.alive():
            raise ProcessExited(f"worker {self.name} exited:\n{self.log_text()[-3000:]}")
        with open(self.log, "rb") as f:
            f.seek(self._offset)
            return b" ready." in f.read()


class Beat(Proc):
    """`celery -A workers beat`: the schedule that runs the sweeper."""

    def __init__(self, workdir: Path, env: dict[str, str]):
        self.workdir = workdir
        self.log = workdir / "beat.log"
        self.env = env

    def start(self) -> Beat:
        self._spawn(
            [
                str(BIN / "celery"),
                "-A",
                "workers",
                "beat",
                "-l",
                "INFO",
                "-s",
                str(self.workdir / "beat-schedule"),
            ],
            self.env,
        )
        return self


def stack_env(
    redis_url: str, emulator_url: str | None, api_key: str | None = None, **settings: Any
) -> dict[str, str]:
    """Environment for workers: Redis, the API (or emulator) and any BATCHLINE_* settings."""
    env = {"BATCHLINE_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    if emulator_url:
        env["ANTHROPIC_BASE_URL"] = emulator_url
        env["ANTHROPIC_API_KEY"] = api_key or EMULATOR_KEY
    elif api_key:
        env["ANTHROPIC_API_KEY"] = api_key
    for key, value in settings.items():
        if isinstance(value, str):
            text = value
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = str(value)
        else:
            text = orjson.dumps(value).decode()
        env[f"BATCHLINE_{key.upper()}"] = text
    return env
