"""Shared fixtures: private redis-server, emulator and celery worker processes."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from batchline.client import Client
from batchline.devstack import RESULTS_WORKER_ARGS, RESULTS_WORKER_ENV
from batchline.settings import Settings
from tests.support.procs import (
    Beat,
    Emulator,
    RedisServer,
    Worker,
    stop_all,
    wait_for,
    worker_env,
)

# The suite runs several tests at a time and ends when its last test does: the long ones
# (real processes waiting on each other) go first, the quick ones fill in at the end.
LONG_FIRST = ("tests/bench", "tests/reliability", "tests/ops", "tests/pipeline", "tests/events")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def weight(item: pytest.Item) -> int:
        return next(
            (i for i, d in enumerate(LONG_FIRST) if item.nodeid.startswith(d)), len(LONG_FIRST)
        )

    items.sort(key=weight)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Any]:
    """Start more redis-servers (AOF, password...); all stopped at the end of the test."""
    started: list[RedisServer] = []

    def start(name: str, **kw: Any) -> RedisServer:
        server = RedisServer(tmp_path / name, **kw).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def emulator_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Emulator] = []

    def start(*args: str, **env: str) -> Emulator:
        emu = Emulator(tmp_path, *args, env=env).start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def emulator(emulator_factory: Any) -> Emulator:
    return emulator_factory("--processing-seconds", "0.3")  # type: ignore[no-any-return]


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Worker] = []

    def start(env: dict[str, str], wait: bool = True, **kw: Any) -> Worker:
        w = Worker(tmp_path, env, **kw)
        started.append(w)
        return w.start(wait=wait)

    yield start
    stop_all(started)


@dataclass
class Stack:
    """A running Batchline: Redis, the emulator, workers, and a client pointed at them."""

    tmp: Path
    redis: RedisServer
    emulator: Emulator
    env: dict[str, str]
    client: Client
    workers: list[Worker] = field(default_factory=list)
    beat: Beat | None = None

    _batch: list[Worker] | None = None

    def worker(self, wait: bool = True, env: dict[str, str] | None = None, **kw: Any) -> Worker:
        w = Worker(self.tmp, {**self.env, **(env or {})}, **kw)
        self.workers.append(w)
        if self._batch is not None:  # inside starting(): ready together at its end
            self._batch.append(w)
            return w.start(wait=False)
        return w.start(wait=wait)

    @contextlib.contextmanager
    def starting(self) -> Iterator[None]:
        """Workers started inside start side by side; all are ready when it ends (a worker
        takes seconds to boot: one after another, that adds up)."""
        self._batch = []
        try:
            yield
            for w in self._batch:
                wait_for(w.ready, 60, interval=0.1, what=f"worker {w.name}")
        finally:
            self._batch = None

    def results_worker(self, name: str, **kw: Any) -> Worker:
        """A results worker as deployed: solo pool, 64 in hand, no ack emulation, no
        per-result log lines (batchline.devstack)."""
        return self.worker(
            queues=["results"],
            name=name,
            concurrency=1,
            extra=RESULTS_WORKER_ARGS,
            env=RESULTS_WORKER_ENV,
            **kw,
        )

    def start_hooks(self) -> Worker:
        """Another service's Celery app (tests.support.hookapp) on its own `hooks` queue."""
        return self.worker(
            queues=["hooks"],
            name="hooks",
            app="tests.support.hookapp",
            env={"HOOK_BROKER_URL": self.redis.url},
        )

    def start_beat(self) -> Beat:
        self.beat = Beat(self.tmp, self.env).start()
        return self.beat

    def stop(self) -> None:
        procs: list[Any] = [*self.workers, *([self.beat] if self.beat else [])]
        stop_all(procs)


@pytest.fixture
def stack_factory(
    tmp_path: Path, redis_server: RedisServer, emulator_factory: Any
) -> Iterator[Any]:
    """Start a stack with chosen settings and emulator flags (workers started by the test)."""
    stacks: list[Stack] = []

    def make(*emulator_args: str, redis: RedisServer | None = None, **settings: Any) -> Stack:
        server = redis or redis_server
        emu = emulator_factory(*(emulator_args or ("--processing-seconds", "0.3")))
        env = worker_env(server.url, emu.base_url, **settings)
        client = Client(Settings(redis_url=server.url, **_client_settings(settings)))
        st = Stack(tmp_path, server, emu, env, client)
        stacks.append(st)
        return st

    yield make
    for st in stacks:
        st.stop()
    gc.collect()  # let results of failed calls go while Redis still answers


def _client_settings(settings: dict[str, Any]) -> dict[str, Any]:
    keep = ("key_prefix", "max_batch_requests", "max_batch_bytes")
    return {k: v for k, v in settings.items() if k in keep}


@pytest.fixture
def stack(stack_factory: Any) -> Stack:
    """Redis, the emulator and one worker on every queue."""
    st: Stack = stack_factory()
    st.worker()
    return st
