"""Never paying twice, measured: a job in which one request in five repeats an earlier one, run
with the cache on, then the same requests again as a second job. For each: what reached the
API (requests, batches), what was answered without it, the cost and the saving, as the job's
own status reports them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from batchline.client import Client
from batchline.settings import Settings
from bench import batchline_run
from bench.jobgen import Job, read_job
from bench.stack import close_client, stack

REPEAT_SHARE = 0.2


def repeating_job(job: Job, path: Path) -> tuple[int, int]:
    """Write the job's first requests plus repeats of them (same params, new custom_id) to
    `path`, as many lines as the job; (lines, distinct requests)."""
    reqs = read_job(job.path)
    distinct = len(reqs) - int(len(reqs) * REPEAT_SHARE)
    lines = reqs[:distinct] + [
        {"custom_id": f"again-{i:07d}", "params": reqs[i % distinct]["params"]}
        for i in range(len(reqs) - distinct)
    ]
    with open(path, "wb") as f:
        for line in lines:
            f.write(orjson.dumps(line) + b"\n")
    return len(lines), distinct


def run(workdir: Path, job: Job, workers: int, topology: str = "split") -> dict[str, Any]:
    """Both jobs through one stack; the second finds every answer in the cache."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "repeating.jsonl"
    count, distinct = repeating_job(job, path)
    timeout_s = max(600.0, count / 20)
    out: dict[str, Any] = {"requests": count, "distinct": distinct}
    with stack(workdir) as st:
        batchline_run.start_batchline(st, workers, topology)
        client = Client(Settings(redis_url=st.redis.url))
        for label in ("first", "again"):
            before = st.emulator.stats()
            t0 = time.time()
            sub = client.submit(path, job_id=f"bench-cache-{label}", cache=True, timeout_s=600)
            status = client.wait(sub["job_id"], timeout_s=timeout_s)
            seconds = time.time() - t0
            after = st.emulator.stats()
            out[label] = {
                "seconds": round(seconds, 2),
                "succeeded": status["counts"]["succeeded"],
                "sent_to_api": after["requests_received"] - before["requests_received"],
                "batches_created": after["batches_created"] - before["batches_created"],
                "deduplicated": status["deduplicated"],
                "cache_hits": status["cache_hits"],
                "cost_usd": status["cost_usd"],
                "saved_usd": status["saved_usd"],
            }
        close_client(client)
    return out
