"""The baseline users start from: one sequential script with the SDK alone.

Reads the JSONL, creates the batch(es) of at most 100,000 requests, polls each until it
ends, iterates the results with the SDK and calls the same handler for each one. Run in its
own process so its peak memory is its own:

    python -m bench.sequential --job job.jsonl --base-url http://127.0.0.1:PORT --handler io
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

from batchline.devstack import PROJECT_ROOT, Emulator
from bench.handlers import HANDLERS
from bench.jobgen import read_job

API_MAX_BATCH_REQUESTS = 100_000
API_KEY = "sk-bench-sequential"


def run(
    job: Path, base_url: str, handler: str, poll_interval_s: float, limit: int | None = None
) -> dict[str, Any]:
    handle = HANDLERS[handler]
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
            handled += 1
    t_done = time.time()
    return {
        "requests": count,
        "handled": handled,
        "handler": handler,
        "batches": len(batch_ids),
        "started_at": t0,
        "read_s": t_read - t0,
        "create_s": t_created - t_read,
        "poll_s": t_ended - t_created,
        "results_s": t_done - t_ended,
        "total_s": t_done - t0,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def run_in_process(
    workdir: Path, job: Path, handler: str, poll_interval_s: float, limit: int | None = None
) -> dict[str, Any]:
    """Start a private emulator and run the script against it in a child process."""
    workdir.mkdir(parents=True, exist_ok=True)
    emu = Emulator(workdir, "--processing-seconds", "0").start()
    try:
        cmd = [
            sys.executable, "-m", "bench.sequential", "--job", str(job),
            "--base-url", emu.base_url, "--handler", handler,
            "--poll-interval-s", str(poll_interval_s),
        ]  # fmt: skip
        if limit is not None:
            cmd += ["--limit", str(limit)]
        done = subprocess.run(
            cmd, cwd=PROJECT_ROOT, capture_output=True, check=False, env={**os.environ}
        )
        if done.returncode != 0:
            raise RuntimeError(f"the sequential script failed:\n{done.stderr.decode()[-3000:]}")
        out: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
        stats = emu.stats()
        out["api_calls"] = {k: v for k, v in stats["calls"].items() if v}
        return out
    finally:
        emu.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--job", type=Path, required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--handler", choices=sorted(HANDLERS), default="noop")
    parser.add_argument("--poll-interval-s", type=float, default=0.5)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    out = run(args.job, args.base_url, args.handler, args.poll_interval_s, args.limit)
    sys.stdout.write(orjson.dumps(out).decode() + "\n")


if __name__ == "__main__":
    main()
