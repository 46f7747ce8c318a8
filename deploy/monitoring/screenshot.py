"""Draw docs/images/dashboard.png: the Batchline dashboard's panels over a real run.

It starts a private Redis, the emulator, a worker, beat and the exporter (batchline.devstack),
and a Prometheus server scraping the exporter every second with deploy/monitoring/alerts.yml
loaded. It runs three jobs through them, with requests that fail, requests that fail once and
are sent again, API answers of 429, 500 and 529 and a refused submit. Then it draws every panel
of the Grafana dashboard (deploy/monitoring/grafana/dashboards/batchline.json) in a static
page, deploy/monitoring/render.html filled in: each panel at its gridPos on a 24-column grid,
its title and unit, its targets' PromQL `expr` asked of that Prometheus over the run's time
range (/api/v1/query_range; /api/v1/query for a stat panel's number) and named by their
`legendFormat`; timeseries panels as line charts (stacked where the panel stacks, threshold
lines where it draws them), stat panels as a big number. The charts are uPlot's, installed
from the npm registry into a temporary directory at each run (`npm install`) and inlined in
the page; headless Chromium screenshots the page.

Grafana's own variables in a query are read as: $__rate_interval and $__interval 1m,
$__interval_ms 60000, $__range (and _s, _ms) the run's length; a dashboard variable as its
current value. The page's footer names any it replaced.

Grafana is not needed. Needs `prometheus` and `chromium` (Debian's packages) and `npm`. Run it
by hand from the project:

    .venv/bin/python deploy/monitoring/screenshot.py [-o docs/images/dashboard.png] [--html PAGE]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import html
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
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
TEMPLATE = MONITORING / "render.html"
# The charting library, from the npm registry at each run (never kept in the repository).
UPLOT = "uplot@1.6.32"
# Grafana's grid: 24 columns, rows of 30 px with 8 px between panels; the page's header, the
# padding round the grid and the footer (as render.html sets them), for the window's height.
WIDTH, CELL, GAP, HEADER, PAD, FOOTER = 1600, 30, 8, 48, 8, 34
# At most about this many points per series, as Grafana asks for about one per pixel.
MAX_POINTS = 600
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


def npm_uplot(work: Path) -> tuple[str, str]:
    """uPlot's script and stylesheet, installed into work with npm."""
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("npm is not installed (apt-get install npm)")
    prefix = work / "npm"
    prefix.mkdir()
    subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(prefix),
            "--no-save",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--loglevel=error",
            UPLOT,
        ],
        check=True,
        timeout=300,
    )
    dist = prefix / "node_modules" / "uplot" / "dist"
    return (dist / "uPlot.iife.min.js").read_text(), (dist / "uPlot.min.css").read_text()


def grafana_variables(dashboard: dict[str, Any], start: int, end: int) -> dict[str, str]:
    """What each variable of a query is read as: Grafana's own and the dashboard's."""
    length = end - start
    values = {
        "__rate_interval": "1m",
        "__interval": "1m",
        "__interval_ms": "60000",
        "__range": f"{length}s",
        "__range_s": str(length),
        "__range_ms": str(length * 1000),
    }
    for var in dashboard.get("templating", {}).get("list", []):
        current = (var.get("current") or {}).get("value")
        if isinstance(current, list):
            current = "|".join(current)
        if current in (None, "$__all"):
            current = ".*"
        values[var["name"]] = str(current)
    return values


VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


def expand(expr: str, values: dict[str, str], used: dict[str, str]) -> str:
    """expr with its variables replaced; those replaced are added to used."""

    def sub(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in values:
            return match.group(0)
        used[f"${name}"] = values[name]
        return values[name]

    return VARIABLE.sub(sub, expr)


def prom(base: str, path: str, params: dict[str, Any]) -> Any:
    """The data of a Prometheus API answer; ValueError with Prometheus's error."""
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as exc:
        body = json.load(exc)
    if body.get("status") != "success":
        raise ValueError(body.get("error", "query failed"))
    return body["data"]


def series_name(legend_format: str, metric: dict[str, str], expr: str) -> str:
    """A series' name as Grafana gives it: legendFormat's {{label}} filled in, else the
    metric with its labels, else (no labels) the query."""
    if legend_format and legend_format != "__auto":
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m[1], ""), legend_format)
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    name = metric.get("__name__", "")
    if not labels:
        return name or expr
    return f"{name}{{{labels}}}"


def number(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def panel_data(
    base: str, panel: dict[str, Any], values: dict[str, str], used: dict[str, str], span: range
) -> dict[str, Any]:
    """One panel of the page: what render.html draws, its targets asked of Prometheus."""
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    custom = defaults.get("custom", {})
    out: dict[str, Any] = {
        "title": panel.get("title", ""),
        "type": panel["type"],
        "gridPos": panel["gridPos"],
        "unit": defaults.get("unit", ""),
        "min": defaults.get("min"),
        "max": defaults.get("max"),
        "decimals": defaults.get("decimals"),
        "stacking": custom.get("stacking", {}).get("mode", "none") == "normal",
        "thresholds": defaults.get("thresholds", {}).get("steps", []),
        "thresholdsStyle": custom.get("thresholdsStyle", {}).get("mode", "off"),
        "options": panel.get("options", {}),
        "series": [],
        "errors": [],
    }
    if panel["type"] == "row":
        return out
    for target in panel.get("targets", []):
        if target.get("hide") or "expr" not in target:
            continue
        expr = expand(target["expr"], values, used)
        legend_format = expand(target.get("legendFormat", ""), values, used)
        try:
            data = prom(
                base,
                "/api/v1/query_range",
                {"query": expr, "start": span.start, "end": span[-1], "step": span.step},
            )
            last = {}
            if panel["type"] != "timeseries":  # the big number: the value at the range's end
                instant = prom(base, "/api/v1/query", {"query": expr, "time": span[-1]})
                last = {
                    json.dumps(r["metric"], sort_keys=True): number(r["value"][1])
                    for r in instant["result"]
                }
        except ValueError as exc:
            out["errors"].append(f"{target.get('refId', '')}: {exc}")
            continue
        for result in data["result"]:
            points: list[float | None] = [None] * len(span)
            for t, v in result["values"]:
                points[round((t - span.start) / span.step)] = number(v)
            key = json.dumps(result["metric"], sort_keys=True)
            out["series"].append(
                {
                    "name": series_name(legend_format, result["metric"], expr),
                    "expr": expr,
                    "values": points,
                    "last": last.get(key, points[-1]),
                }
            )
    return out


def page(
    dashboard: dict[str, Any], base: str, start: int, end: int, uplot: tuple[str, str]
) -> tuple[str, int]:
    """The page drawing the dashboard over [start, end], and its height in pixels."""
    step = max(1, math.ceil((end - start) / MAX_POINTS))
    span = range(start, end + 1, step)
    values = grafana_variables(dashboard, start, end)
    used: dict[str, str] = {}
    panels = [panel_data(base, p, values, used, span) for p in dashboard["panels"]]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    height = HEADER + 2 * PAD + rows * CELL + (rows - 1) * GAP + FOOTER

    def utc(t: int) -> str:
        return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")

    model = {"times": list(span), "panels": panels}
    note = ""
    if used:
        note = "; Grafana variables read as " + ", ".join(f"{k} = {v}" for k, v in used.items())
    fill = {
        "__TITLE__": html.escape(dashboard.get("title", "")),
        "__RANGE__": html.escape(f"{utc(start)} to {utc(end)[11:]} UTC, step {step}s"),
        "__NOTE__": html.escape(note),
        "__UPLOT_CSS__": uplot[1],
        "__UPLOT_JS__": uplot[0],
        # JSON in a <script>: no "</" may end it early
        "__MODEL__": json.dumps(model, separators=(",", ":")).replace("</", "<\\/"),
    }
    text = re.sub("|".join(fill), lambda m: fill[m[0]], TEMPLATE.read_text())
    return text, height


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
            "--virtual-time-budget=10000",
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
    parser.add_argument("--html", type=Path, help="also keep the page drawn, here")
    args = parser.parse_args()
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        sys.exit("prometheus is not installed (apt-get install prometheus)")
    dashboard = json.loads(DASHBOARD.read_text())
    work = Path(tempfile.mkdtemp(prefix="batchline-screenshot-"))
    try:
        uplot = npm_uplot(work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
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
        start = int(time.time())
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
        text, height = page(dashboard, base, start, int(time.time()), uplot)
        secrets = [v for k, v in env.items() if ("KEY" in k or "SECRET" in k) and v]
        if any(secret in text for secret in secrets):
            sys.exit("a key or secret would be in the page; not drawn")
        html_path = work / "dashboard.html"
        html_path.write_text(text)
        if args.html:
            shutil.copyfile(html_path, args.html)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        screenshot(html_path.as_uri(), args.output, work, height)
        print(f"wrote {args.output}", file=sys.stderr)
    finally:
        stop_all(procs)
        emulator.stop()
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
