"""A CSV with a template, ingested: the worker's peak memory must not grow with the file, and
what the job holds in Redis per row (its requests, and the rows kept for the results table).

The same generated CSV shape at two sizes (a tenth, then all of the rows), each through a
fresh stack whose only worker serves the ingest queue (nothing is sent: the measure is the
submit). The client uploads the file as it is; the worker reads the upload as a stream.
"""

from __future__ import annotations

import csv
import random
import time
from pathlib import Path
from typing import Any

from batchline.client import Client
from batchline.keys import JobKeys
from batchline.settings import Settings
from bench.jobgen import _text
from bench.memory import RssSampler
from bench.stack import close_client, stack

DEFAULT_ROWS = 1_000_000
QUICK_ROWS = 10_000
TEMPLATE = "Summarize this support ticket in one sentence: {text}"
SYSTEM = "You summarise tickets about {category} for the support team."
DEFAULTS = {"model": "claude-haiku-4-5", "max_tokens": 200}
CATEGORIES = ("billing", "shipping", "returns", "account", "technical")
# Peak RSS of the large run over the small one: "does not grow with the file".
GROWTH_LIMIT = 1.25
# As bench.report's Redis target: a request's compressed size plus this much per request.
REDIS_OVERHEAD_BYTES = 300
MB = 1e6


def write_csv(path: Path, rows: int, seed: int = 11) -> int:
    """A CSV of `rows` tickets (id, category, text of 150 to 450 characters, some with
    commas, quotes and newlines); returns its size in bytes."""
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "category", "text"])
        for i in range(rows):
            text = _text(rng, rng.randint(150, 450))
            if i % 10 == 0:
                text = f'"{text[:40]}",\n{text[40:]}'
            writer.writerow([f"t-{i:07d}", CATEGORIES[i % len(CATEGORIES)], text])
    return path.stat().st_size


def _sample_bytes(r: Any, key: str, count: int = 2000) -> float:
    """Average size of a hash's values (a random sample)."""
    pairs = r.hrandfield(key, count, withvalues=True) or []
    values = pairs[1::2]
    return sum(len(v) for v in values) / len(values) if values else 0.0


def measure(workdir: Path, rows: int) -> dict[str, Any]:
    path = workdir / f"tickets-{rows}.csv"
    size = write_csv(path, rows)
    with stack(workdir / f"stack-{rows}", visibility_timeout_s=3600) as st:
        worker = st.worker(name="ingest", concurrency=1, queues=["ingest"])
        client = Client(Settings(redis_url=st.redis.url))
        try:
            before = st.used_memory()
            with RssSampler([worker]) as sampler:
                t0 = time.time()
                sub = client.submit(
                    path,
                    template=TEMPLATE,
                    system_template=SYSTEM,
                    id_column="id",
                    defaults=DEFAULTS,
                    timeout_s=3600,
                )
                seconds = time.time() - t0
            after = st.used_memory()
            r = st.r()
            keys = JobKeys("bl", sub["job_id"])
            kept = int(r.memory_usage(keys.rows, samples=0) or 0)
            stored = _sample_bytes(r, keys.requests)
        finally:
            close_client(client)
    accepted = sub["accepted"]
    per_row = (after - before) / accepted if accepted else None
    return {
        "rows": rows,
        "file_bytes": size,
        "accepted": accepted,
        "seconds": round(seconds, 2),
        "rows_per_s": round(accepted / seconds, 1) if seconds else None,
        "peak_worker_rss_bytes": sampler.max_bytes(),
        "redis_bytes_per_row": round(per_row, 1) if per_row is not None else None,
        "kept_rows_bytes_per_row": round(kept / accepted, 1) if accepted else None,
        "stored_request_bytes": round(stored, 1),
    }


def run(workdir: Path, rows: int) -> dict[str, Any]:
    """Both sizes; the large run's peak over the small run's."""
    workdir.mkdir(parents=True, exist_ok=True)
    small = measure(workdir, max(rows // 10, 1))
    large = measure(workdir, rows)
    growth = large["peak_worker_rss_bytes"] / small["peak_worker_rss_bytes"]
    return {"small": small, "large": large, "rss_growth": round(growth, 3)}


def targets(s: dict[str, Any], target: Any) -> list[dict[str, Any]]:
    """The report's target for this section (`target` is bench.report._target)."""
    t = s.get("table_ingest")
    if not t:
        return []
    n = t["large"]["rows"]
    budget = t["large"]["stored_request_bytes"] + REDIS_OVERHEAD_BYTES
    return [
        target(
            f"CSV ingest peak worker RSS, {n:,} rows / {t['small']['rows']:,} rows",
            f"< {GROWTH_LIMIT}x (flat)",
            t["rss_growth"],
            lambda v: v < GROWTH_LIMIT,
            note=f"{t['large']['peak_worker_rss_bytes'] / MB:,.0f} MB at {n:,} rows "
            f"({t['large']['file_bytes'] / MB:,.0f} MB file)",
        ),
        target(
            "CSV + template job: Redis per row, rows kept for the results table included",
            f"< stored request + {REDIS_OVERHEAD_BYTES} B = {budget:.0f} B",
            t["large"]["redis_bytes_per_row"],
            lambda v: v < budget,
            unit="B",
            note=f"of which the kept row {t['large']['kept_rows_bytes_per_row']} B",
        ),
    ]


def rows(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Table rows for the report."""
    t = s.get("table_ingest")
    if not t:
        return []
    out = []
    for label in ("small", "large"):
        m = t[label]
        sec = f"CSV + template ingest ({m['rows']:,} rows, {m['file_bytes'] / MB:,.0f} MB)"
        out.append(
            (
                sec,
                "ingest (upload + validate + store)",
                f"{m['seconds']:.1f} s ({m['rows_per_s']:,.0f} rows/s)",
            )
        )
        out.append((sec, "peak worker RSS", f"{m['peak_worker_rss_bytes'] / MB:,.0f} MB"))
        out.append(
            (
                sec,
                "Redis per row: all / rows kept / request stored",
                f"{m['redis_bytes_per_row']} B / {m['kept_rows_bytes_per_row']} B / "
                f"{m['stored_request_bytes']} B",
            )
        )
    return out
