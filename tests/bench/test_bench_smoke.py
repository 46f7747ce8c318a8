"""The benchmark harness at smoke size: every section runs and reports numbers (no timing
assertions here; speed is measured by `make bench`)."""

from __future__ import annotations

import subprocess
import sys
from numbers import Real
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchline.localstack import PROJECT_ROOT
from bench.__main__ import SECTIONS


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


@pytest.mark.slow
def test_quick_harness_reports_every_section_with_numbers(tmp_path: Path) -> None:
    # Given the harness at its smoke size
    out = tmp_path / "results.json"
    # When it runs every section
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out),
         "--workdir", str(tmp_path / "work")],
        cwd=PROJECT_ROOT, capture_output=True, timeout=280, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    # Then the JSON holds every section, each with its numbers
    report = orjson.loads(out.read_bytes())
    s = report["sections"]
    assert set(s) == set(SECTIONS)
    n = report["args"]["requests"]

    bl = s["batchline"]
    assert bl["counts"]["succeeded"] == n
    for stage in ("upload", "validate_chunk", "create", "poll_to_ended", "fan_out",
                  "result_processing"):  # fmt: skip
        assert _number(bl["stages"][stage]["seconds"]), stage
        assert _number(bl["stages"][stage]["requests_per_s"]), stage
    assert _number(bl["end_to_end"]["requests_per_s"])
    assert _number(bl["redis_memory"]["per_request_bytes"])
    assert _number(bl["redis_memory"]["compressed_request_bytes"])
    assert bl["worker_memory"]["peak_rss_bytes"] > 0
    assert all(p["peak_rss_bytes"] > 0 for p in bl["worker_memory"]["processes"])
    assert bl["celery_messages"]["task_messages_per_request"] >= 1
    assert bl["api_calls"]["per_batch"]["create"] == 1

    assert s["sequential"]["handled"] == n and _number(s["sequential"]["total_s"])
    for variant in ("defaults", "result_backend"):
        assert _number(s["plain_celery"][variant]["requests_per_s"]), variant
    assert _number(s["io"]["batchline"]["end_to_end"]["seconds"])
    assert _number(s["io"]["batchline"]["stages"]["hooks"]["seconds"])
    assert s["io"]["sequential"]["handler"] == "io" and _number(s["io"]["sequential"]["total_s"])

    cache = s["cache"]
    assert cache["first"]["succeeded"] == cache["again"]["succeeded"] == cache["requests"]
    # Repeats inside the first job are sent once; the second job sends nothing at all.
    assert cache["first"]["sent_to_api"] == cache["distinct"] < cache["requests"]
    assert cache["first"]["deduplicated"] == cache["requests"] - cache["distinct"]
    assert cache["again"]["sent_to_api"] == 0 and cache["again"]["batches_created"] == 0
    assert cache["again"]["cache_hits"] == cache["requests"]
    assert 0 < cache["first"]["saved_usd"] < cache["again"]["saved_usd"]

    modes = s["polling"]["modes"]
    assert modes and all(_number(m["peak_calls_per_minute"]) for m in modes.values())
    assert all(_number(m["status_calls_per_step"]) for m in modes.values())
    assert _number(s["polling"]["direct"]["calls_ratio"])
    assert _number(s["emulator_speed"]["ratio"])

    # Durable writes: each mode made its creates through the pipeline's create path, the
    # replica one waiting for the replica, and `auto` chooses it while a replica is connected
    dw = s["durable_writes"]
    assert dw["replicas"] == 1 and dw["auto_waits_for"] == "replica"
    off, replica = dw["modes"]["off"], dw["modes"]["replica"]
    for m in (off, replica):
        assert m["creates"] == report["args"]["durable_creates"] and m["not_created"] == 0
        assert m["polls_scheduled"] == m["creates"]  # every create adopted its batch
        assert _number(m["creates_per_s"]) and _number(m["ms_per_create"]["mean"])
        assert _number(m["intent_ms"]["mean"]) and _number(m["claim_ms"]["mean"])
    assert off["waits_for"] is None and replica["waits_for"] == "replica"
    assert _number(replica["added_ms_per_create"])
    assert _number(replica["added_ms_intent_and_claim"])
    fsync = dw["modes"]["fsync"]
    assert _number(fsync["creates_per_s"]) if fsync["available"] else "WAITAOF" in fsync["note"]
    assert b"Durable writes" in done.stdout

    # And every target has a value and a verdict, and the table was printed
    assert report["targets"] and all(_number(t["value"]) for t in report["targets"])
    assert all(t["result"] in ("pass", "miss", "n/a") for t in report["targets"])
    assert b"Targets" in done.stdout
