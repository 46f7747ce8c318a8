"""Flower and the metrics exporter for the ops tests, started as docker-compose.yml runs them."""

from __future__ import annotations

import base64
import gc
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from batchline.devstack import BIN, Proc, ProcessExited, free_port, wait_for

FLOWER_ENTRY = ["celery", "-A", "workers", "flower"]


def flower_argv(port: int, db: Path | str) -> list[str]:
    """`celery -A workers flower` with the options the compose file gives it."""
    return [
        *FLOWER_ENTRY,
        f"--port={port}",
        "--persistent=True",
        f"--db={db}",
        "--state_save_interval=60000",
    ]


def metrics_argv(host: str, port: int) -> list[str]:
    return ["batchline", "metrics", "--host", host, "--port", str(port)]


def _bin(argv: list[str]) -> list[str]:
    return [str(BIN / argv[0]), *argv[1:]]


class Flower(Proc):
    """Flower on a free port, with basic authentication from FLOWER_BASIC_AUTH."""

    def __init__(self, workdir: Path, env: dict[str, str], user: str, password: str):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "flower.log"
        self.db = workdir / "flower.db"
        self.env = {**env, "FLOWER_BASIC_AUTH": f"{user}:{password}"}
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.auth = {"Authorization": f"Basic {token}"}

    def start(self) -> Flower:
        self._spawn(_bin(flower_argv(self.port, self.db)), self.env)
        wait_for(self._ready, 30, interval=0.2, what="flower")
        return self

    def _ready(self) -> bool:
        if not self.alive():
            raise ProcessExited(f"flower exited:\n{self.log_text()[-3000:]}")
        return get(self.base_url + "/healthcheck")[0] == 200

    def api(self, path: str) -> Any:
        status, body = get(self.base_url + path, self.auth)
        assert status == 200, (path, status, body[:300])
        return orjson.loads(body)


class MetricsExporter(Proc):
    """`batchline metrics` on a free port."""

    def __init__(self, workdir: Path, env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.log = workdir / "metrics.log"
        self.env = env

    def start(self) -> MetricsExporter:
        self._spawn(_bin(metrics_argv("127.0.0.1", self.port)), self.env)
        wait_for(self._ready, 20, interval=0.1, what="the metrics exporter")
        return self

    def _ready(self) -> bool:
        if not self.alive():
            raise ProcessExited(f"the exporter exited:\n{self.log_text()[-3000:]}")
        return get(self.url)[0] == 200

    def scrape(self) -> str:
        status, body = get(self.url)
        assert status == 200, body[:300]
        return body.decode()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Status and body of a GET (an HTTP error is an answer too)."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def stop_all(procs: list[Any], timeout: float = 15) -> None:
    """SIGTERM every process at once, then wait for each (a warm shutdown takes seconds).

    First, the test's finished Celery results are collected while their Redis still runs
    (an AsyncResult unsubscribes from Redis when it is garbage collected).
    """
    gc.collect()
    for p in procs:
        if p.alive():
            p.signal_group(signal.SIGTERM)
    for p in procs:
        p.stop(timeout)
