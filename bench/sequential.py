"""The baseline users start from: one sequential script with the SDK alone.

Reads the JSONL, creates the batch(es) of at most 100,000 requests, polls each until it
ends, iterates the results with the SDK and calls the same handler for each one. Run in its
own process so its peak memory is its own:

    python -m bench.sequential --job job.jsonl --base-url http://127.0.0.1:PORT --handler io

With --keep-redis URL it runs the job twice (a batch each), the first time writing one record
per result to Redis (a SET of the result's JSON under its custom_id): what a script that
keeps its results must do. Each run prints one JSON line; --watch NAME=PID attributes the
CPU of another process (the emulator, that Redis) to each run.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import orjson
import psutil
import redis

from batchline.devstack import PROJECT_ROOT, Emulator, RedisServer
from bench.handlers import HANDLERS
from bench.jobgen import read_job

API_MAX_BATCH_REQUESTS = 100_000
API_KEY = "sk-bench-sequential"
KEEP_PREFIX = "bench:sequential:"


def run(
    job: Path,
    base_url: str,
    handler: str,
    poll_interval_s: float,
    limit: int | None = None,
    keep_redis: str | None = None,
    watch: dict[str, int] | None = None,
) -> dict[str, Any]:
    handle = HANDLERS[handler]
    keep = redis.Redis.from_url(keep_redis) if keep_redis else None
    watch = watch or {}
    watched_before = {name: _cpu_s(pid) for name, pid in watch.items()}
    at_start = resource.getrusage(resource.RUSAGE_SELF)  # imports are not the run's CPU
    client = anthropic.Anthropic(base_url=base_url, api_key=API_KEY, max_retries=2, timeout=600)
    t0 = time.time()
    requests = read_job(job)
    if limit is not None:
        requests = requests[:limit]
    t_read = time.time()
    batch_ids = []
    for start in range(0, len(requests), API_MAX_BATCH_REQUESTS):
        part = requests[start : start + API_MAX_BATCH_REQUESTS]
        batch_ids.append(client.messages.batches.create(requests=part).id)  # type: ignore[arg-type]
    count = len(requests)
    del requests
    t_created = time.time()
    for batch_id in batch_ids:
        while client.messages.batches.retrieve(batch_id).processing_status != "ended":
            time.sleep(poll_interval_s)
    t_ended = time.time()
    handled = 0
    first_result: float | None = None
    for batch_id in batch_ids:
        for result in client.messages.batches.results(batch_id):
            if first_result is None:
                first_result = time.time()
            handle(result.custom_id, result.result)
            if keep is not None:
                keep.set(KEEP_PREFIX + result.custom_id, result.to_json(indent=None))
            handled += 1
    t_done = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    script_cpu_s = usage.ru_utime + usage.ru_stime - at_start.ru_utime - at_start.ru_stime
    watched = {f"{name}_cpu_s": _cpu_s(pid) - watched_before[name] for name, pid in watch.items()}
    return {
        "requests": count,
        "handled": handled,
        "handler": handler,
        "kept_in": "redis" if keep is not None else None,
        "batches": len(batch_ids),
        "started_at": t0,
        "read_s": t_read - t0,
        "create_s": t_created - t_read,
        "poll_s": t_ended - t_created,
        "results_s": t_done - t_ended,
        "total_s": t_done - t0,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "script_cpu_s": round(script_cpu_s, 3),
        **{k: round(v, 3) for k, v in watched.items()},
        # CPU of the whole run: the script and the processes it talks to
        "cpu_s": round(script_cpu_s + sum(watched.values()), 3),
    }


def _cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def run_in_process(
    workdir: Path,
    job: Path,
    handler: str,
    poll_interval_s: float,
    limit: int | None = None,
    also_keeping: bool = False,
) -> dict[str, Any]:
    """Start a private emulator and run the script against it in a child process; with
    also_keeping, the child runs the job again keeping each result in a private Redis
    (under `keeps_results`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    emu = Emulator(workdir, "--processing-seconds", "0").start()
    server = RedisServer(workdir / "redis").start() if also_keeping else None
    try:
        assert emu.proc is not None
        cmd = [
            sys.executable, "-m", "bench.sequential", "--job", str(job),
            "--base-url", emu.base_url, "--handler", handler,
            "--poll-interval-s", str(poll_interval_s), "--watch", f"emulator={emu.proc.pid}",
        ]  # fmt: skip
        if limit is not None:
            cmd += ["--limit", str(limit)]
        if server is not None:
            assert server.proc is not None
            cmd += ["--keep-redis", server.url, "--watch", f"redis={server.proc.pid}"]
        done = subprocess.run(
            cmd, cwd=PROJECT_ROOT, capture_output=True, check=False, env={**os.environ}
        )
        if done.returncode != 0:
            raise RuntimeError(f"the sequential script failed:\n{done.stderr.decode()[-3000:]}")
        runs: list[dict[str, Any]] = [orjson.loads(line) for line in done.stdout.splitlines()]
        out = runs[-1]
        stats = emu.stats()
        out["api_calls"] = {k: v for k, v in stats["calls"].items() if v}  # of every run
        if server is not None:
            out["keeps_results"] = runs[0]
            out["keeps_results"]["records_kept"] = sum(
                1 for _ in server.client().scan_iter(KEEP_PREFIX + "*", count=1000)
            )
        return out
    finally:
        emu.stop()
        if server is not None:
            server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--job", type=Path, required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--handler", choices=sorted(HANDLERS), default="noop")
    parser.add_argument("--poll-interval-s", type=float, default=0.5)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument(
        "--keep-redis", default=None, help="then run again, writing each result to this Redis"
    )
    parser.add_argument("--watch", action="append", default=[], metavar="NAME=PID")
    args = parser.parse_args(argv)
    watch = {name: int(pid) for name, _, pid in (w.partition("=") for w in args.watch)}
    # The script that keeps its results first: the plain one (the baseline of the targets)
    # then runs in a warm process, which can only make it faster.
    keeps = [args.keep_redis, None] if args.keep_redis else [None]
    for keep in keeps:
        # the Redis a run does not write to is not its CPU
        watched = {k: v for k, v in watch.items() if keep or k != "redis"}
        out = run(
            args.job, args.base_url, args.handler, args.poll_interval_s, args.limit, keep, watched
        )
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
