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

from batchline.devstack import PROJECT_ROOT
from bench.__main__ import SECTIONS


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


# The sections in groups of about equal length, run side by side (each group is one run of
# the harness, with its own processes), so the smoke bench does not hold the suite's end.
GROUPS = {
    # The targets that compare sections are all in here (result stage vs plain Celery at its
    # defaults and tuned, the in-process handler and the hook vs the sequential script, memory
    # of every handler run, Redis CPU per result).
    "pipeline": ("batchline", "sequential", "plain_celery", "io", "emulator_speed"),
    "cache-durability-tables": ("cache", "durable_writes", "table_ingest"),
    "polling": ("polling", "task_events"),
}


def test_the_groups_cover_every_section() -> None:
    assert sorted(s for g in GROUPS.values() for s in g) == sorted(SECTIONS)


def _run(tmp_path: Path, sections: tuple[str, ...]) -> tuple[dict[str, Any], Any]:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", ",".join(sections),
         "--out", str(out), "--workdir", str(tmp_path / "work")],
        cwd=PROJECT_ROOT, capture_output=True, timeout=280, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report = orjson.loads(out.read_bytes())
    assert set(report["sections"]) == set(sections)
    # Every target has a verdict: judged (a value, pass or miss), or not in this run or not
    # judged at this size (n/a)
    for t in report["targets"]:
        if t["result"] == "n/a":
            assert t["value"] is None or _number(t["value"]), t
        else:
            assert _number(t["value"]) and t["result"] in ("pass", "miss"), t
    return report, done


@pytest.mark.slow
@pytest.mark.parametrize("group", list(GROUPS))
def test_quick_harness_reports_every_section_with_numbers(tmp_path: Path, group: str) -> None:
    # Given the harness at its smoke size, when it runs this group's sections
    report, done = _run(tmp_path, GROUPS[group])
    # Then the JSON holds each section, with its numbers
    s = report["sections"]
    n = report["args"]["requests"]
    if "batchline" in s:
        check_batchline(s["batchline"], n)
    if "sequential" in s:
        check_sequential(s["sequential"], n)
    if "emulator_speed" in s:
        assert _number(s["emulator_speed"]["ratio"])
    if "plain_celery" in s:
        for variant in ("defaults", "result_backend", "tuned"):
            assert _number(s["plain_celery"][variant]["requests_per_s"]), variant
        assert s["plain_celery"]["tuned"]["result_keys"] == 0
    if "io" in s:
        check_io(s["io"])
    if "cache" in s:
        check_cache(s["cache"])
    if "polling" in s:
        check_polling(s["polling"])
    if "task_events" in s:
        te = s["task_events"]
        assert [len(te["requests_per_s"][m]) for m in ("on", "off")] == [1, 1]
        assert all(_number(v) and v > 0 for m in ("on", "off") for v in te["requests_per_s"][m])
        assert _number(te["cost_pct"])
    if "durable_writes" in s:
        check_durable_writes(s["durable_writes"], report["args"]["durable_creates"])
        assert b"Durable writes" in done.stdout
    if "table_ingest" in s:
        check_table_ingest(s["table_ingest"])
    if group == "pipeline":  # every target comparing sections was measured
        measured = [
            t
            for t in report["targets"]
            if "polling" not in t["target"] and "task events" not in t["target"]
        ]
        assert measured and all(_number(t["value"]) or _no_handler_option(t) for t in measured)
        assert report["notes"] and b"breaks even" in done.stdout
    assert b"Targets" in done.stdout


def check_batchline(bl: dict[str, Any], n: int) -> None:
    assert bl["counts"]["succeeded"] == n
    for stage in ("upload", "validate_chunk", "create", "poll_to_ended", "fan_out",
                  "result_processing"):  # fmt: skip
        assert _number(bl["stages"][stage]["seconds"]), stage
        assert _number(bl["stages"][stage]["requests_per_s"]), stage
    assert _number(bl["end_to_end"]["requests_per_s"])
    assert _number(bl["redis_memory"]["per_request_bytes"])
    assert _number(bl["redis_memory"]["compressed_request_bytes"])
    assert _number(bl["redis_cpu"]["us_per_result"])
    assert bl["worker_memory"]["peak_rss_bytes"] > 0
    assert all(p["peak_rss_bytes"] > 0 for p in bl["worker_memory"]["processes"])
    # Task messages were pushed (LPUSH commands; one may carry many messages)
    assert bl["celery_messages"]["task_messages_per_request"] > 0
    assert bl["api_calls"]["per_batch"]["create"] == 1


def _no_handler_option(target: dict[str, Any]) -> bool:
    """The in-process handler's target, when this Batchline has no `handler` job option."""
    return target["result"] == "n/a" and "handler option not available" in target["note"]


def check_sequential(seq: dict[str, Any], n: int) -> None:
    assert seq["handled"] == n and _number(seq["total_s"]) and _number(seq["cpu_s"])
    # The second script keeps one record per result in Redis
    keep = seq["keeps_results"]
    assert keep["handled"] == keep["records_kept"] == n and _number(keep["total_s"])


def check_io(io: dict[str, Any]) -> None:
    # The 10 ms handler in-process (when the job option exists) and as a Celery-task hook
    runs = [io["hook"]]
    if io["inprocess"].get("available") is not False:
        runs.append(io["inprocess"])
        assert io["inprocess"]["counts"]["succeeded"] == io["sequential"]["requests"]
    for run in runs:
        assert _number(run["end_to_end"]["seconds"])
        assert _number(run["stages"]["hooks"]["seconds"])
    assert io["sequential"]["handler"] == "io" and _number(io["sequential"]["total_s"])


def check_cache(cache: dict[str, Any]) -> None:
    assert cache["first"]["succeeded"] == cache["again"]["succeeded"] == cache["requests"]
    # Repeats inside the first job are sent once; the second job sends nothing at all.
    assert cache["first"]["sent_to_api"] == cache["distinct"] < cache["requests"]
    assert cache["first"]["deduplicated"] == cache["requests"] - cache["distinct"]
    assert cache["again"]["sent_to_api"] == 0 and cache["again"]["batches_created"] == 0
    assert cache["again"]["cache_hits"] == cache["requests"]
    assert 0 < cache["first"]["saved_usd"] < cache["again"]["saved_usd"]


def check_polling(polling: dict[str, Any]) -> None:
    modes = polling["modes"]
    assert modes and all(_number(m["peak_calls_per_minute"]) for m in modes.values())
    assert all(_number(m["status_calls_per_step"]) for m in modes.values())
    assert _number(polling["direct"]["calls_ratio"])


def check_durable_writes(dw: dict[str, Any], creates: int) -> None:
    # Each mode made its creates through the pipeline's create path, the replica one waiting
    # for the replica, and `auto` chooses it while a replica is connected
    assert dw["replicas"] == 1 and dw["auto_waits_for"] == "replica"
    off, replica = dw["modes"]["off"], dw["modes"]["replica"]
    for m in (off, replica):
        assert m["creates"] == creates and m["not_created"] == 0
        assert m["polls_scheduled"] == m["creates"]  # every create adopted its batch
        assert _number(m["creates_per_s"]) and _number(m["ms_per_create"]["mean"])
        assert _number(m["intent_ms"]["mean"]) and _number(m["claim_ms"]["mean"])
    assert off["waits_for"] is None and replica["waits_for"] == "replica"
    assert _number(replica["added_ms_per_create"])
    assert _number(replica["added_ms_intent_and_claim"])
    fsync = dw["modes"]["fsync"]
    assert _number(fsync["creates_per_s"]) if fsync["available"] else "WAITAOF" in fsync["note"]


def check_table_ingest(t: dict[str, Any]) -> None:
    # Two CSVs, one ten times the other, ingested whole; the worker's peak memory measured
    for size in ("small", "large"):
        run = t[size]
        assert run["accepted"] == run["rows"] > 0
        assert _number(run["rows_per_s"]) and run["peak_worker_rss_bytes"] > 0
        assert _number(run["redis_bytes_per_row"]) and _number(run["kept_rows_bytes_per_row"])
    assert t["large"]["rows"] == 10 * t["small"]["rows"]
    assert _number(t["rss_growth"])
