"""Shared fixtures: private redis-server, emulator and celery worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import Emulator, RedisServer, Worker, worker_env


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
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
    for w in started:
        w.stop()


@pytest.fixture
def stack_env(redis_server: RedisServer, emulator: Emulator) -> dict[str, str]:
    return worker_env(redis_server.url, emulator.base_url)
