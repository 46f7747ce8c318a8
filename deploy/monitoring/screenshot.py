"""Draw docs/images/dashboard.png: the dashboard's main queries on Prometheus's graph page,
over a real run.

It starts a private Redis, the emulator, a worker, beat and the exporter (batchline.devstack),
and a Prometheus server scraping the exporter every second with deploy/monitoring/alerts.yml
loaded. It runs three jobs through them, with requests that fail, requests that fail once and
are sent again, API answers of 429, 500 and 529 and a refused submit, then takes a headless
Chromium screenshot of Prometheus's /graph page with one graph per panel of the Grafana
dashboard (each panel's first query, as the dashboard writes it).

Needs `prometheus` and `chromium` (Debian's packages). Run it by hand from the project:

    .venv/bin/python deploy/monitoring/screenshot.py [-o docs/images/dashboard.png]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from batchline.client import Client
from batchline.devstack import (
    BIN,
    PROJECT_ROOT,
    Beat,
    Emulator,
    Proc,
    ProcessExited,
    RedisServer,
    Worker,
    free_port,
    stack_env,
    stop_all,
    wait_for,
)
from batchline.errors import JobRefused
from batchline.settings import Settings

MONITORING = PROJECT_ROOT / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "batchline.json"
# The dashboard panels shown, by title, in this order.
PANELS = (
    "Requests finished per second, by state",
    "Queue depths",
    "Requests in flight against the cap",
    "API errors per second, by kind",
    "Failed requests by error type (last hour)",
    "Cost by model (USD per hour)",
)
# Prometheus's graph page takes about this many pixels per graph at this width; the window
# holds them all (a page taller than the window scrolls to the last graph's input).
WIDTH, PANEL_HEIGHT, PAGE_HEIGHT = 1280, 760, 120
# Fast timings for a run of a few minutes.
SETTINGS: dict[str, Any] = {
    "poll_interval_s": 1,
    "poll_max_interval_s": 2,
    "api_retry_base_s": 0.5,
    "api_retry_max_s": 2,
    "sweep_interval_s": 5,
    "max_batch_requests": 300,
    "webhook_secret": "whsec_" + base64.b64encode(b"dashboard-screenshot-secret").decode(),
    "webhook_subscriptions": [
        # refused (a private address): a dead letter at once
        {"url": "http://10.255.255.1/hook", "event_types": ["job.completed"]},
    ],
}
MODEL = {"model": "claude-haiku-4-5", "max_tokens": 64}


class Server(Proc):
    """A process started from an argv, logging to a file."""

    def __init__(self, log: Path, argv: list[str], env: dict[str, str] | None = None):
        self.log = log
        self.argv = argv
        self.env = env

    def start(self) -> Server:
        self._spawn(self.argv, self.env)
        return self


def ready(proc: Proc, url: str) -> bool:
    if not proc.alive():
        raise ProcessExited(f"{proc.log.name}: exited:\n{proc.log_text()[-2000:]}")
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def requests(prefix: str, n: int) -> list[dict[str, Any]]:
    """n requests: most succeed, one in 25 fails for good, one in 10 fails once."""
    out = []
    for i in range(n):
        directive = ""
        if i % 25 == 3:
            directive = " [[emulate:errored:invalid_request_error]]"
        elif i % 10 == 5:
            directive = " [[emulate:errored-once:overloaded_error]]"
        elif i % 40 == 7:
            directive = " [[emulate:expired-once]]"
        out.append({"custom_id": f"{prefix}{i}", "prompt": f"question {prefix}{i}{directive}"})
    return out


def queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    by_title = {p["title"]: p for p in dash["panels"] if p["type"] != "row"}
    return [by_title[title]["targets"][0]["expr"] for title in PANELS]


def graph_url(base: str, exprs: list[str], range_input: str) -> str:
    params: dict[str, str] = {}
    for i, expr in enumerate(exprs):
        params[f"g{i}.expr"] = expr
        params[f"g{i}.tab"] = "0"
        params[f"g{i}.range_input"] = range_input
    return f"{base}/graph?{urllib.parse.urlencode(params)}"


def screenshot(url: str, out: Path, work: Path, height: int) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not installed (apt-get install chromium)")
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={work / 'chromium'}",
            f"--window-size={WIDTH},{height}",
            "--virtual-time-budget=20000",
            f"--screenshot={out}",
            url,
        ],
        check=True,
        timeout=180,
        capture_output=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-o", "--output", type=Path, default=PROJECT_ROOT / "docs/images/dashboard.png"
    )
    parser.add_argument("--range", default="5m", help="the graphs' time range (Prometheus syntax)")
    args = parser.parse_args()
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        sys.exit("prometheus is not installed (apt-get install prometheus)")
    work = Path(tempfile.mkdtemp(prefix="batchline-screenshot-"))
    procs: list[Proc] = []
    redis = RedisServer(work / "redis").start()
    emulator = Emulator(work, "--processing-seconds", "20").start()
    try:
        env = stack_env(redis.url, emulator.base_url, **SETTINGS)
        metrics_port, prom_port = free_port(), free_port()
        exporter = Server(
            work / "metrics.log",
            [str(BIN / "batchline"), "metrics", "--host", "127.0.0.1", "--port", str(metrics_port)],
            env,
        ).start()
        procs.append(exporter)
        wait_for(lambda: ready(exporter, f"http://127.0.0.1:{metrics_port}/metrics"), 30)
        config = work / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(MONITORING / "alerts.yml")],
                    "scrape_configs": [
                        {
                            "job_name": "batchline",
                            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                        }
                    ],
                }
            )
        )
        prom = Server(
            work / "prometheus.log",
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
        ).start()
        procs.append(prom)
        base = f"http://127.0.0.1:{prom_port}"
        wait_for(lambda: ready(prom, f"{base}/-/ready"), 60, interval=0.5, what="prometheus")
        time.sleep(15)  # a quiet fleet first
        procs.append(Worker(work, env, concurrency=4).start())
        procs.append(Beat(work, env).start())
        client = Client(Settings(redis_url=redis.url))
        emulator.configure(
            fail_next=[
                {"endpoint": "create", "status": 429, "retry_after": 1},
                {"endpoint": "retrieve", "status": 500},
                {"endpoint": "retrieve", "status": 529},
                {"endpoint": "retrieve", "status": 500},
            ]
        )
        jobs = []
        for n, size in enumerate((1200, 2400, 1800)):
            jobs.append(client.submit(requests(f"j{n}-", size), defaults=MODEL)["job_id"])
            if n == 1:
                with contextlib.suppress(JobRefused):  # a refused submit, counted
                    client.submit(requests("costly-", 50), defaults=MODEL, max_cost_usd=1e-9)
            time.sleep(25)
        for job_id in jobs:
            final = client.wait(job_id, timeout_s=600)
            print(job_id, final["state"], final["counts"], file=sys.stderr)
        time.sleep(20)  # the quiet fleet after
        args.output.parent.mkdir(parents=True, exist_ok=True)
        url = graph_url(base, queries(), args.range)
        screenshot(url, args.output, work, height=PANEL_HEIGHT * len(PANELS) + PAGE_HEIGHT)
        print(f"wrote {args.output}", file=sys.stderr)
    finally:
        stop_all(procs)
        emulator.stop()
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
