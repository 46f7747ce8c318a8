"""`make bench`: Batchline against its baselines on private processes; one table, one JSON.

.venv/bin/python -m bench [--requests 100000] [--workers 2] [--only batchline,plain_celery]
.venv/bin/python -m bench --quick          # the smoke size `make test` runs
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import (
    batchline_run,
    cache_run,
    durable_writes,
    emulator_speed,
    plain_celery,
    polling,
    report,
    sequential,
    table_ingest,
    task_events,
)
from bench.jobgen import Job, write_job
from bench.stack import BENCH_SETTINGS

SECTIONS = (
    "batchline",
    "sequential",
    "plain_celery",
    "io",
    "cache",
    "polling",
    "emulator_speed",
    "table_ingest",
    "durable_writes",
    "task_events",
)
DEFAULT_OUT = Path("bench/out/results.json")
QUICK_REQUESTS = 300
QUICK_IO_REQUESTS = 150
# The 10 ms runs of the full bench: the sequential script needs 10 ms per request (1,000+ s
# at 100,000), so the io section runs at this size unless --io-requests says otherwise; both
# sides run the same job, so the ratios stay fair.
FULL_IO_REQUESTS = 20_000
QUICK_POLLING = polling.PollingConfig(
    batches=20,
    requests_per_batch=2,
    processing_s=2.0,
    api_rpm=600,
    poll_interval_s=0.2,
    poll_max_interval_s=1.0,
)
# The pipeline's switch between one `retrieve` per batch and one shared `list` snapshot:
# list polling starts at this many batches in flight (0: never).
LIST_THRESHOLD_SETTING = "poll_list_threshold"


class _Timer:
    """Announces each section that runs and keeps how long it took."""

    def __init__(self, sections: list[str], console: Console):
        self.sections = sections
        self.console = console
        self.seconds: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def stop(self) -> None:
        if self._current is not None:
            name, started = self._current
            self.seconds[name] = round(time.monotonic() - started, 1)
            self._current = None

    def step(self, name: str, what: str) -> bool:
        """True when section `name` is to run (and its clock starts)."""
        self.stop()
        if name not in self.sections:
            return False
        self.console.log(f"[bold]{name}[/bold]: {what}")
        self._current = (name, time.monotonic())
        return True


def _parse_mode(text: str) -> tuple[str, dict[str, Any]]:
    """NAME or NAME:key=value,key=value (BATCHLINE_* settings for that polling mode)."""
    name, _, rest = text.partition(":")
    settings: dict[str, Any] = {}
    for pair in filter(None, rest.split(",")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected key=value in {pair!r}")
        settings[key.strip()] = value.strip()
    return name, settings


def _polling_modes(given: list[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    if given:
        return dict(given)
    from batchline.settings import Settings

    if LIST_THRESHOLD_SETTING not in Settings.model_fields:
        return {"retrieve": {}}
    return {"retrieve": {LIST_THRESHOLD_SETTING: 0}, "list": {LIST_THRESHOLD_SETTING: 1}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--requests", type=int, default=None, help="job size (default 100000)")
    p.add_argument("--workers", type=int, default=2, help="Celery pool processes (default 2)")
    p.add_argument(
        "--topology",
        choices=batchline_run.TOPOLOGIES,
        default="split",
        help="split (default): one worker for ingest/api/events and --workers solo-pool "
        "processes on the results queue; prefork: one worker, --workers pool processes, "
        "every queue",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"JSON file; the table goes next to it as Markdown (default {DEFAULT_OUT})",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="SECTION",
        help=f"run only these sections (repeat or comma-separate): {', '.join(SECTIONS)}",
    )
    p.add_argument("--quick", action="store_true", help=f"smoke size ({QUICK_REQUESTS} requests)")
    p.add_argument(
        "--io-requests",
        type=int,
        default=None,
        help=f"job size of the 10 ms handler runs (default: --requests, at most "
        f"{FULL_IO_REQUESTS:,}; {QUICK_IO_REQUESTS} with --quick); the sequential script "
        "needs 10 ms for each",
    )
    p.add_argument("--polling-batches", type=int, default=None)
    p.add_argument("--polling-processing-s", type=float, default=None)
    p.add_argument("--api-rpm", type=int, default=None, help="the limit in the polling section")
    p.add_argument(
        "--poll-mode",
        action="append",
        type=_parse_mode,
        default=[],
        metavar="NAME[:key=value,...]",
        help="a polling mode and its BATCHLINE_* settings (repeatable); default: retrieve "
        f"({LIST_THRESHOLD_SETTING}=0) and list ({LIST_THRESHOLD_SETTING}=1) when the "
        "pipeline has that setting, else retrieve alone",
    )
    p.add_argument("--emulator-requests", type=int, default=None)
    p.add_argument(
        "--durable-creates",
        type=int,
        default=None,
        help=f"creates per durable_writes mode (default {durable_writes.DEFAULT_CREATES}; "
        f"{durable_writes.QUICK_CREATES} with --quick)",
    )
    p.add_argument(
        "--table-rows",
        type=int,
        default=None,
        help=f"rows of the CSV ingest (default {table_ingest.DEFAULT_ROWS:,}; "
        f"--quick: {table_ingest.QUICK_ROWS:,})",
    )
    p.add_argument("--workdir", type=Path, default=None, help="keep logs and files here")
    args = p.parse_args(argv)
    only = [s.strip() for group in args.only for s in group.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        p.error(f"unknown section(s): {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    args.sections = only or list(SECTIONS)
    if args.requests is None:
        args.requests = QUICK_REQUESTS if args.quick else 100_000
    if args.io_requests is None:
        args.io_requests = min(args.requests, QUICK_IO_REQUESTS if args.quick else FULL_IO_REQUESTS)
    if args.durable_creates is None:
        args.durable_creates = (
            durable_writes.QUICK_CREATES if args.quick else durable_writes.DEFAULT_CREATES
        )
    return args


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """Run the chosen sections; the report with its sections, targets and table rows."""
    started = time.time()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="batchline-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sections: dict[str, Any] = {}
    poll_interval_s = float(BENCH_SETTINGS["poll_interval_s"])

    timer = _Timer(args.sections, console)
    step = timer.step

    try:
        jobs: dict[int, Job] = {}

        def job(n: int) -> Job:
            if n not in jobs:
                jobs[n] = write_job(work / f"job-{n}.jsonl", n)
            return jobs[n]

        main_job = job(args.requests)
        if step("batchline", f"{args.requests:,} requests, no-op handler"):
            sections["batchline"] = batchline_run.run(
                work / "batchline", main_job, args.workers, topology=args.topology
            )
        if step("sequential", "the SDK alone, no-op handler; again keeping each result in Redis"):
            sections["sequential"] = sequential.run_in_process(
                work / "sequential", main_job.path, "noop", poll_interval_s, also_keeping=True
            )
        if step("plain_celery", "one apply_async per result: Celery defaults, then tuned"):
            sections["plain_celery"] = {
                "defaults": plain_celery.run(
                    work / "plain", main_job, args.workers, result_backend=False
                ),
                "result_backend": plain_celery.run(
                    work / "plain-backend", main_job, args.workers, result_backend=True
                ),
                "tuned": plain_celery.run(
                    work / "plain-tuned", main_job, args.workers, result_backend=False, tuned=True
                ),
            }
        if step("io", f"{args.io_requests:,} requests, 10 ms I/O handler"):
            io_job = job(args.io_requests)
            # Each on a stack of its own, as every other run: the first job on fresh workers
            # pays their warm-up (the first fan-out takes seconds longer), so no run follows
            # another on the same workers.
            io: dict[str, Any] = {
                "inprocess": batchline_run.run(
                    work / "io-inprocess", io_job, args.workers, "inprocess", topology=args.topology
                )
                if batchline_run.handler_option_available()
                else {"available": False, "note": batchline_run.HANDLER_NOT_AVAILABLE},
                "hook": batchline_run.run(
                    work / "io-hook", io_job, args.workers, "io", topology=args.topology
                ),
            }
            io["sequential"] = sequential.run_in_process(
                work / "io-sequential", io_job.path, "io", poll_interval_s
            )
            sections["io"] = io
        if step("cache", "repeats inside a job, then the same job again, cache on"):
            sections["cache"] = cache_run.run(
                work / "cache", main_job, args.workers, topology=args.topology
            )
        if step("polling", "many batches in flight under a rate limit"):
            base = QUICK_POLLING if args.quick else polling.PollingConfig()
            cfg = polling.PollingConfig(
                batches=args.polling_batches or base.batches,
                requests_per_batch=base.requests_per_batch,
                processing_s=args.polling_processing_s or base.processing_s,
                api_rpm=args.api_rpm or base.api_rpm,
                poll_interval_s=base.poll_interval_s,
                poll_max_interval_s=base.poll_max_interval_s,
                workers=args.workers,
                modes=_polling_modes(args.poll_mode),
            )
            sections["polling"] = polling.run(work / "polling", cfg)
        if step("emulator_speed", "the emulator's create against a null server"):
            sections["emulator_speed"] = emulator_speed.run(args.emulator_requests or args.requests)
        if step("table_ingest", "a CSV with a template: ingest memory at two sizes"):
            quick_rows = table_ingest.QUICK_ROWS if args.quick else table_ingest.DEFAULT_ROWS
            sections["table_ingest"] = table_ingest.run(
                work / "table_ingest", args.table_rows or quick_rows
            )
        if step("durable_writes", f"{args.durable_creates:,} creates per durable_writes mode"):
            sections["durable_writes"] = durable_writes.run(
                work / "durable_writes", args.durable_creates
            )
        if step("task_events", "the result stage with the workers' task events on and off"):
            size = min(args.requests, task_events.MAX_REQUESTS)
            rounds = task_events.QUICK_ROUNDS if args.quick else task_events.ROUNDS
            # (at smoke size on one prefork worker: it only shows that the section runs)
            topology = "prefork" if args.quick else args.topology
            sections["task_events"] = task_events.run(
                work / "task_events", job(size), args.workers, topology, rounds
            )
        timer.stop()
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return {
        "machine": report.machine(),
        "args": {
            "requests": args.requests,
            "io_requests": args.io_requests,
            "workers": args.workers,
            "topology": args.topology,
            "sections": args.sections,
            "quick": args.quick,
            "durable_creates": args.durable_creates,
        },
        "job": {
            "requests": main_job.count,
            "body_bytes": main_job.body_bytes,
            "avg_request_bytes": round(main_job.avg_request_bytes, 1),
            "avg_compressed_bytes": round(main_job.avg_compressed_bytes, 1),
        },
        "settings": BENCH_SETTINGS,
        "started_at": started,
        "seconds": round(time.time() - started, 1),
        "section_seconds": timer.seconds,
        "sections": sections,
        "targets": report.targets(sections),
        "notes": report.notes(sections),
        "rows": report.rows(sections),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    result = run(args, console)
    report.print_table(result, console)
    report.write_json(result, args.out)
    args.out.with_suffix(".md").write_text(report.markdown(result))
    console.print(f"written to {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
