"""A private stack per measurement: redis-server, the emulator and Celery workers, all children.

Built on batchline.devstack; every process is started here and stopped here.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from batchline.client import Client
from batchline.devstack import Emulator, RedisServer, Worker, stack_env

# Timings for a local run: the emulator answers at once, so waits are short. Settings the
# pipeline does not know are ignored by it (extra="ignore"), so modes can pass new ones.
BENCH_SETTINGS: dict[str, Any] = {
    "poll_interval_s": 0.5,
    "poll_max_interval_s": 1.0,
    "poll_jitter": 0.1,
    "api_retry_base_s": 0.2,
    "api_retry_max_s": 5,
    "visibility_timeout_s": 900,
    "api_rpm": 100_000,
    "source_dir": "/",
}


@dataclass
class Stack:
    """Processes of one measurement and the handles to read them."""

    workdir: Path
    redis: RedisServer
    emulator: Emulator
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)

    def r(self) -> redis.Redis:
        return self.redis.client()

    def worker(
        self,
        *,
        name: str,
        concurrency: int,
        app: str = "workers",
        queues: list[str] | None = None,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> Worker:
        """Start a worker; with wait=False it starts in the background (see `ready`), so
        several workers of a measurement can import their apps side by side."""
        w = Worker(
            self.workdir,
            {**self.env, **(env or {})},
            name=name,
            concurrency=concurrency,
            app=app,
            queues=queues,
            extra=extra,
        )
        self.workers.append(w)
        w.start(wait=wait)
        return w

    def ready(self, timeout_s: float = 60.0) -> None:
        """Wait until every worker started so far is ready (raises if one exits)."""
        wait_until(
            lambda: all(w.ready() for w in self.workers), timeout_s, 0.1, "the workers to start"
        )

    def commandstats(self) -> dict[str, int]:
        """Calls per Redis command since the server started (INFO commandstats)."""
        info = self.r().info("commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}

    def used_memory(self) -> int:
        return int(self.r().info("memory")["used_memory"])

    def redis_cpu_s(self) -> float:
        """CPU seconds Redis has used since it started (INFO cpu: user + system)."""
        info = self.r().info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def servers(self) -> dict[str, int]:
        """Pids of Redis and the emulator, to watch their CPU and memory too."""
        out = {}
        for name, proc in (("redis", self.redis.proc), ("emulator", self.emulator.proc)):
            if proc is not None:
                out[name] = proc.pid
        return out

    def check_alive(self) -> None:
        """Raise if a worker died: waiting for it to finish work would only time out."""
        for w in self.workers:
            if not w.alive():
                raise RuntimeError(f"worker {w.name} exited:\n{w.log_text()[-3000:]}")

    def wait(self, predicate: Any, timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
        """Poll predicate until truthy, failing early if a worker dies."""

        def check() -> Any:
            self.check_alive()
            return predicate()

        return wait_until(check, timeout_s, interval_s, what)


@contextmanager
def stack(workdir: Path, *emulator_args: str, **settings: Any) -> Iterator[Stack]:
    """Start Redis and the emulator; workers are added by the caller; all stop on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stop:
        server = RedisServer(workdir / "redis").start()
        stop.callback(server.stop)
        emu = Emulator(workdir, *(emulator_args or ("--processing-seconds", "0"))).start()
        stop.callback(emu.stop)
        env = stack_env(server.url, emu.base_url, **{**BENCH_SETTINGS, **settings})
        st = Stack(workdir, server, emu, env)
        try:
            yield st
        finally:
            for w in reversed(st.workers):
                w.stop()


def close_client(client: Client) -> None:
    """Let go of a Client's Celery app while its Redis still runs: a submit's AsyncResult
    finalised after Redis stopped would complain about the lost result connection."""
    gc.collect()
    client.app.close()


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.05, what: str = "") -> Any:
    """Poll predicate until truthy; TimeoutError naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)
