"""The harness's output: targets as ratios from the same run, one table (rich), and JSON."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psutil
from rich.console import Console
from rich.table import Table

from bench import durable_writes, table_ingest, task_events

MB = 1e6
# Worker memory must stay under this multiple of the batch's create body.
MEMORY_BODY_RATIO = 2.5
# Redis may hold this much more per request in flight than the request compressed.
REDIS_OVERHEAD_BYTES = 300
# The memory targets are stated for a 100,000-request batch; below these sizes the fixed
# memory of a Python process (about 120 MB) or of Redis (about 1.5 MB) dominates.
WORKER_MEMORY_MIN_REQUESTS = 100_000
REDIS_MEMORY_MIN_REQUESTS = 10_000
# Issue 12's targets: throughput ratios from one run, and Redis CPU per result.
RESULT_VS_PLAIN = 4.0  # result stage vs plain Celery at its defaults
RESULT_VS_TUNED = 1.5  # ... vs plain Celery tuned like Batchline's results workers
IO_INPROCESS_VS_SCRIPT = 30.0  # 10 ms handler, in-process, vs the sequential script
IO_HOOK_VS_SCRIPT = 15.0  # 10 ms handler as a Celery-task hook vs the sequential script
END_TO_END_VS_SCRIPT = 0.25  # no-op handler, end to end
REDIS_CPU_US_PER_RESULT = 40.0
# Below this size Redis's fixed work (polling, the bench's own sampling) weighs on the figure.
REDIS_CPU_MIN_REQUESTS = 10_000
# 200 batches under a 600/min limit: every create within this many seconds.
CREATES_SPREAD_S = 30.0
CREATES_SPREAD_MIN_BATCHES = 200


def machine() -> dict[str, Any]:
    """What the numbers ran on, and how busy it was."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "ram_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _get(data: dict[str, Any], *path: str) -> Any:
    cur: Any = data
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def _target(
    name: str,
    wanted: str,
    value: float | None,
    ok: Callable[[float], bool],
    unit: str = "x",
    note: str = "",
    applies: bool = True,
) -> dict[str, Any]:
    passed = None if value is None or not applies else bool(ok(value))
    return {
        "target": name,
        "wanted": wanted,
        "value": None if value is None else round(value, 3),
        "unit": unit,
        "result": "n/a" if passed is None else ("pass" if passed else "miss"),
        "note": note,
    }


def _at_least(wanted: float) -> Callable[[float], bool]:
    return lambda v: v >= wanted


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def break_even_ms(s: dict[str, Any], script: tuple[str, ...] = ("sequential",)) -> float | None:
    """The handler time (ms per result) at which Batchline's end to end equals the script's.

    The script calls the handler in series: its time grows by the handler time h for every
    result. Batchline's handler waits overlap (threads on the results workers), so its time
    stays near its no-op time while h is small. They break even at
    h = (Batchline s - script s) / results, from the no-op runs of the same job; 0 when
    Batchline is ahead already."""
    bl = _get(s, "batchline", "end_to_end", "seconds")
    seq = _get(s, *script, "total_s")
    n = _get(s, "batchline", "requests")
    if bl is None or seq is None or not n or _get(s, *script, "requests") != n:
        return None
    return max(0.0, (bl - seq) * 1000 / n)


def notes(s: dict[str, Any]) -> list[str]:
    """How the derived figures come from the measured ones, in this run's numbers."""
    out = []
    bl = _get(s, "batchline", "end_to_end", "seconds")
    seq = _get(s, "sequential", "total_s")
    n = _get(s, "batchline", "requests")
    even = break_even_ms(s)
    if even is not None and bl is not None and seq is not None and n:
        text = (
            f"Break-even handler time: the script handles one result after another, so a "
            f"handler of h ms adds h ms per result to its {seq:.2f} s; Batchline's handler "
            f"waits overlap in threads on the results workers, so its {bl:.2f} s stays about "
            f"the same while the waits overlap. The two break even at "
            f"h = ({bl:.2f} s - {seq:.2f} s) / {n:,} results = {even:.3f} ms per result; "
            f"above it Batchline finishes first."
        )
        keep_even = break_even_ms(s, ("sequential", "keeps_results"))
        keep_s = _get(s, "sequential", "keeps_results", "total_s")
        if keep_even is not None and keep_s is not None:
            text += (
                f" Against the script that keeps each result in Redis ({keep_s:.2f} s): "
                f"{keep_even:.3f} ms."
            )
        out.append(text)
    script_cpu_us = _script_cpu_us(s)
    if script_cpu_us is not None and bl and seq:
        message_us = [
            (key, ms * 1000)
            for key in ("tuned", "defaults")
            if (ms := _get(s, "plain_celery", key, "cpu", "ms_per_request", "plain"))
        ]
        against = ""
        if message_us:
            key, us_msg = message_us[0]
            against = (
                f", {'less than' if script_cpu_us < us_msg else 'against'} the "
                f"{us_msg:.0f} µs of worker CPU one message costs plain Celery ({key})"
            )
        out.append(
            f"End to end with a no-op handler: the script spends about {script_cpu_us:.0f} µs "
            f"of CPU per request in all (its process from the file read on, and the "
            f"emulator){against}; Batchline gives every custom_id a message of its own, so "
            f"it runs at {seq / bl:.2f}x the script's speed."
        )
    us = _get(s, "batchline", "redis_cpu", "us_per_result")
    per_core = _get(s, "batchline", "redis_cpu", "results_per_s_per_core")
    if us and per_core:
        out.append(
            f"Redis CPU per result: {us:g} µs over the result stage (INFO cpu before and "
            f"after, divided by the results), so one Redis core carries about "
            f"1,000,000 / {us:g} = {per_core:,} results a second for a whole fleet of workers."
        )
    io_n = _get(s, "io", "sequential", "requests")
    if io_n and n and io_n != n:
        out.append(
            f"The 10 ms runs use {io_n:,} requests (the script needs 10 ms for each); "
            "Batchline and the script run the same job, so their ratio is fair."
        )
    return out


def _script_cpu_us(s: dict[str, Any]) -> float | None:
    cpu = _get(s, "sequential", "cpu_s")
    n = _get(s, "sequential", "requests")
    return cpu * 1e6 / n if cpu is not None and n else None


def targets(s: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 12's targets (and those still held), each a ratio or a bound from this run."""
    out = []
    bl_results = _get(s, "batchline", "stages", "result_processing", "requests_per_s")
    bl_cpu = _get(s, "batchline", "cpu", "ms_per_request", "batchline")
    for key, label, wanted in (
        ("defaults", "result stage vs plain Celery at its defaults", RESULT_VS_PLAIN),
        ("tuned", "result stage vs plain Celery tuned like the results workers", RESULT_VS_TUNED),
    ):
        plain = _get(s, "plain_celery", key, "requests_per_s")
        plain_cpu = _get(s, "plain_celery", key, "cpu", "ms_per_request", "plain")
        cpu_note = ""
        if bl_cpu and plain_cpu:
            cpu_note = (
                f"; worker CPU per request {bl_cpu:.2f} ms vs {plain_cpu:.2f} ms "
                f"({plain_cpu / bl_cpu:.2f}x)"
            )
        out.append(
            _target(
                label,
                f">= {wanted:g}x",
                _ratio(bl_results, plain),
                _at_least(wanted),
                note="requests/s, no-op handler, one message per custom_id" + cpu_note,
            )
        )
    io_seq = _get(s, "io", "sequential", "total_s")
    io_n = _get(s, "io", "sequential", "requests")
    size = f" ({io_n:,} requests)" if io_n else ""
    inprocess = _get(s, "io", "inprocess") or {}
    unavailable = inprocess.get("available") is False
    out.append(
        _target(
            "10 ms I/O handler, in-process handler vs sequential script",
            f">= {IO_INPROCESS_VS_SCRIPT:g}x faster",
            None if unavailable else _ratio(io_seq, _get(inprocess, "end_to_end", "seconds")),
            lambda v: v >= IO_INPROCESS_VS_SCRIPT,
            note=f"n/a: {inprocess.get('note')}" if unavailable else "end to end seconds" + size,
        )
    )
    out.append(
        _target(
            "10 ms I/O handler, Celery-task hook vs sequential script",
            f">= {IO_HOOK_VS_SCRIPT:g}x faster",
            _ratio(io_seq, _get(s, "io", "hook", "end_to_end", "seconds")),
            lambda v: v >= IO_HOOK_VS_SCRIPT,
            note="end to end seconds" + size,
        )
    )
    e2e_bl = _get(s, "batchline", "end_to_end", "seconds")
    e2e_seq = _get(s, "sequential", "total_s")
    even = break_even_ms(s)
    out.append(
        _target(
            "end to end, no-op handler: Batchline vs sequential script",
            f">= {END_TO_END_VS_SCRIPT:g}x",
            _ratio(e2e_seq, e2e_bl),
            lambda v: v >= END_TO_END_VS_SCRIPT,
            note="sequential seconds / Batchline seconds"
            + (f"; break-even handler time {even:.3f} ms (notes)" if even is not None else ""),
        )
    )
    us = _get(s, "batchline", "redis_cpu", "us_per_result")
    per_core = _get(s, "batchline", "redis_cpu", "results_per_s_per_core")
    out.append(
        _target(
            "Redis CPU per result (result stage)",
            f"<= {REDIS_CPU_US_PER_RESULT:g} µs",
            us,
            lambda v: v <= REDIS_CPU_US_PER_RESULT,
            unit=" µs",
            note=(
                f"one Redis core carries about {per_core:,} results/s for a fleet; "
                if per_core
                else ""
            )
            + f"judged from {REDIS_CPU_MIN_REQUESTS:,} requests",
            applies=(_get(s, "batchline", "requests") or 0) >= REDIS_CPU_MIN_REQUESTS,
        )
    )
    runs = (("batchline",), ("io", "hook"), ("io", "inprocess"))
    peaks = [_get(s, *run, "worker_memory", "peak_rss_bytes") for run in runs]
    peak = max((p for p in peaks if p), default=None)
    body = next((b for run in runs if (b := _get(s, *run, "worker_memory", "body_bytes"))), None)
    out.append(
        _target(
            "peak worker RSS / request body size",
            f"< {MEMORY_BODY_RATIO}x",
            _ratio(peak, body),
            lambda v: v < MEMORY_BODY_RATIO,
            note="largest Batchline worker process (main or pool), every handler run; judged "
            f"from {WORKER_MEMORY_MIN_REQUESTS:,} requests",
            applies=(_get(s, "batchline", "requests") or 0) >= WORKER_MEMORY_MIN_REQUESTS,
        )
    )
    per_req = _get(s, "batchline", "redis_memory", "per_request_bytes")
    compressed = _get(s, "batchline", "redis_memory", "compressed_request_bytes")
    out.append(
        _target(
            "Redis memory per request in flight",
            f"< compressed + {REDIS_OVERHEAD_BYTES} B"
            + (f" = {compressed + REDIS_OVERHEAD_BYTES:.0f} B" if compressed else ""),
            per_req,
            lambda v: compressed is not None and v < compressed + REDIS_OVERHEAD_BYTES,
            unit="B",
            note=f"judged from {REDIS_MEMORY_MIN_REQUESTS:,} requests",
            applies=(_get(s, "batchline", "requests") or 0) >= REDIS_MEMORY_MIN_REQUESTS,
        )
    )
    for mode, m in (_get(s, "polling", "modes") or {}).items():
        out.append(
            _target(
                f"polling ({mode}): peak API calls per minute",
                f"<= {m['api_rpm']} (limit)",
                m["peak_calls_per_minute"],
                lambda v, limit=m["api_rpm"]: v <= limit,
                unit="/min",
                note=f"{m.get('max_batches_in_flight')} of {m['batches']} batches in flight at "
                f"once; 429s from the API: {m['calls_429']}",
            )
        )
        out.append(
            _target(
                f"polling ({mode}): creates spread over",
                f"<= {CREATES_SPREAD_S:g} s",
                m.get("creates_spread_s"),
                lambda v: v <= CREATES_SPREAD_S,
                unit=" s",
                note=f"first create to last, {m['batches']} batches under {m['api_rpm']}/min; "
                f"judged from {CREATES_SPREAD_MIN_BATCHES} batches",
                applies=m["batches"] >= CREATES_SPREAD_MIN_BATCHES,
            )
        )
        out.append(
            _target(
                f"polling ({mode}): status calls per backoff step",
                "<= 1",
                m["status_calls_per_step"],
                lambda v: v <= 1,
                unit="",
                note="retrieve+list calls / sum over batches of (poll steps + 1)",
            )
        )
    direct = _get(s, "polling", "direct")
    if direct:
        out.append(
            _target(
                "polling: one list page instead of a retrieve per batch cuts calls",
                "> 1x",
                direct["calls_ratio"],
                lambda v: v > 1,
                note="measured through the SDK on the same batches at the same schedule",
            )
        )
    emu = _get(s, "emulator_speed", "ratio")
    out.append(
        _target(
            "emulator create time / null server",
            "< 2x",
            emu,
            lambda v: v < 2,
            note="bench.emulator_speed",
        )
    )
    out += table_ingest.targets(s, _target)
    out += task_events.targets(s, _target)
    return out


def _rps(stage: dict[str, Any] | None) -> str:
    if not stage or stage.get("seconds") is None:
        return "-"
    rps = stage.get("requests_per_s")
    return f"{stage['seconds']:.2f} s" + (f"  ({rps:,.0f} req/s)" if rps else "")


def _cpu(cpu: dict[str, Any] | None) -> str:
    if not cpu:
        return "-"
    return ", ".join(f"{k} {v:.2f}" for k, v in cpu["ms_per_request"].items())


def _messages(cm: dict[str, Any]) -> str:
    return (
        f"{cm['task_messages_per_request']:.2f} task pushes (LPUSH) + "
        f"{cm['event_messages_per_request']:.2f} "
        f"event messages; {cm['results_stored_per_request']:.2f} task results stored "
        f"(total {cm['total_per_request']:.2f} publishes)"
    )


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / MB:,.0f} MB"


def rows(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(section, measure, value) for the table, from whatever sections ran."""
    out: list[tuple[str, str, str]] = []
    bl = s.get("batchline")
    if bl:
        sec = f"Batchline, no-op handler ({bl['requests']:,} requests, {bl['batches']} batch)"
        names = {
            "upload": "upload to Redis (client)",
            "validate_chunk": "validate + chunk (submit_job)",
            "create": "create (intent -> API created_at)",
            "poll_to_ended": "poll to ended (API ended_at -> seen)",
            "fan_out": "fan-out (stream + store + publish)",
            "result_processing": "result processing (fan-out start -> done_at)",
        }
        for key, label in names.items():
            out.append((sec, label, _rps(bl["stages"].get(key))))
        out.append((sec, "end to end (submit -> job ended)", _rps(bl["end_to_end"])))
        out.append((sec, "result stage measured on", bl["result_stage"]))
        out.append((sec, "CPU ms per request, whole run", _cpu(bl.get("cpu"))))
    seq = s.get("sequential")
    if seq:
        sec = "Sequential SDK script, no-op handler"
        out.append(
            (
                sec,
                "read / create / poll / iterate+handle",
                f"{seq['read_s']:.2f} / {seq['create_s']:.2f} / {seq['poll_s']:.2f} / "
                f"{seq['results_s']:.2f} s",
            )
        )
        out.append(
            (
                sec,
                "end to end",
                f"{seq['total_s']:.2f} s  ({seq['requests'] / seq['total_s']:,.0f} req/s)",
            )
        )
        out.append((sec, "peak RSS of the script", _mb(seq["peak_rss_bytes"])))
        keep = seq.get("keeps_results")
        if keep:
            out.append(
                (
                    sec,
                    "end to end, keeping one record per result in Redis",
                    f"{keep['total_s']:.2f} s  ({keep['requests'] / keep['total_s']:,.0f} req/s; "
                    f"{keep.get('records_kept', 0):,} records)",
                )
            )
        if seq.get("cpu_s") is not None:
            out.append(
                (
                    sec,
                    "CPU µs per request (script + emulator)",
                    f"{seq['cpu_s'] * 1e6 / seq['requests']:,.0f}",
                )
            )
        even = break_even_ms(s)
        if even is not None:
            keep_even = break_even_ms(s, ("sequential", "keeps_results"))
            out.append(
                (
                    sec,
                    "handler time at which Batchline breaks even (notes)",
                    f"{even:.3f} ms per result"
                    + (
                        f"; {keep_even:.3f} ms against the script keeping its results"
                        if keep_even is not None
                        else ""
                    ),
                )
            )
    plain = s.get("plain_celery")
    if plain:
        sec = "Plain Celery fan-out (one apply_async per result)"
        for key, p in plain.items():
            out.append(
                (
                    sec,
                    p["settings"],
                    f"{p['seconds']:.2f} s  ({p['requests_per_s']:,.0f} req/s); "
                    f"{p['task_messages_per_request']:.2f} task + "
                    f"{p['event_messages_per_request']:.2f} other msgs/request"
                    + (f"; {p['result_keys']:,} result keys" if p["result_keys"] else "")
                    + f"; CPU ms/request: {_cpu(p.get('cpu'))}",
                )
            )
            del key
    io = s.get("io")
    if io:
        q = io.get("sequential")
        size = f", {q['requests']:,} requests" if q else ""
        sec = f"10 ms I/O handler{size}"
        ip = io.get("inprocess")
        if ip and ip.get("available") is False:
            out.append((sec, "Batchline, in-process handler", f"n/a: {ip['note']}"))
        elif ip:
            out.append((sec, "Batchline in-process handler: end to end", _rps(ip["end_to_end"])))
            out.append((sec, "  result processing", _rps(ip["stages"]["result_processing"])))
            out.append(
                (sec, "  handler calls (first start -> last end)", _rps(ip["stages"]["hooks"]))
            )
        b = io.get("hook")
        if b:
            out.append((sec, "Batchline Celery-task hook: end to end", _rps(b["end_to_end"])))
            out.append((sec, "  result processing", _rps(b["stages"]["result_processing"])))
            out.append((sec, "  hooks (first start -> last end)", _rps(b["stages"]["hooks"])))
        if q:
            out.append(
                (
                    sec,
                    "sequential script end to end",
                    f"{q['total_s']:.2f} s  ({q['requests'] / q['total_s']:,.0f} req/s)",
                )
            )
    if bl:
        sec = "Costs per request / batch (Batchline, no-op run)"
        wm = bl["worker_memory"]
        for p in wm["processes"]:
            out.append(
                (
                    sec,
                    f"peak RSS {p['worker'].split('@')[0]} {p['role']} pid {p['pid']}",
                    _mb(p["peak_rss_bytes"]),
                )
            )
        out.append((sec, "request body size (create body)", _mb(wm["body_bytes"])))
        rm = bl["redis_memory"]
        out.append(
            (
                sec,
                "Redis memory per request in flight",
                f"{rm['per_request_bytes']} B (request {rm['request_bytes']:.0f} B, "
                f"compressed {rm['compressed_request_bytes']:.0f} B, stored "
                f"{rm.get('stored_request_bytes', '-')} B)",
            )
        )
        out.append(
            (
                sec,
                "Redis memory per request, peak during the result stage",
                f"{rm.get('result_stage_peak_per_request_bytes')} B (queued messages, stored "
                "results and records together)",
            )
        )
        rc = bl.get("redis_cpu") or {}
        if rc.get("us_per_result") is not None:
            out.append(
                (
                    sec,
                    "Redis CPU per result, result stage; results/s one Redis core carries",
                    f"{rc['us_per_result']:g} µs; {rc['results_per_s_per_core']:,}",
                )
            )
        out.append(
            (sec, "Celery messages and pushes per request", _messages(bl["celery_messages"]))
        )
        cm = bl["celery_messages"]
        out.append(
            (
                sec,
                "process_result message size; results queue peak length",
                f"{cm.get('process_result_message_bytes')} B; "
                f"{cm.get('results_queue_max_length') or 0:,}",
            )
        )
        ac = bl["api_calls"]
        out.append(
            (
                sec,
                "API calls per batch",
                f"{ac['calls_per_batch']:.1f} ("
                + ", ".join(f"{k} {v:g}" for k, v in ac["per_batch"].items())
                + ")",
            )
        )
    for key, label in (("inprocess", "10 ms in-process handler run"), ("hook", "10 ms hook run")):
        b = (io or {}).get(key)
        if not b or b.get("available") is False:
            continue
        sec = f"Costs per request (Batchline, {label})"
        for p in b["worker_memory"]["processes"]:
            out.append(
                (
                    sec,
                    f"peak RSS {p['worker'].split('@')[0]} {p['role']} pid {p['pid']}",
                    _mb(p["peak_rss_bytes"]),
                )
            )
        out.append((sec, "Celery messages and pushes per request", _messages(b["celery_messages"])))
        out.append((sec, "CPU ms per request, whole run", _cpu(b.get("cpu"))))
    pol = s.get("polling")
    if pol:
        c = pol["config"]
        sec = (
            f"Polling: {c['batches']} batches in flight, limit {c['api_rpm']}/min, "
            f"interval {c['poll_interval_s']:g}-{c['poll_max_interval_s']:g} s, "
            f"batches end after {c['processing_s']:g} s"
        )
        for mode, m in pol["modes"].items():
            out.append(
                (
                    sec,
                    f"{mode}: calls by endpoint",
                    ", ".join(f"{k} {v}" for k, v in m["calls"].items()) + f" in {m['seconds']} s",
                )
            )
            out.append(
                (
                    sec,
                    f"{mode}: peak calls / minute; 429s",
                    f"{m['peak_calls_per_minute']} / {m['api_rpm']}; {m['calls_429']}",
                )
            )
            out.append(
                (
                    sec,
                    f"{mode}: status calls per batch; per backoff step",
                    f"{m['status_calls_per_batch']}; {m['status_calls_per_step']} "
                    f"(nominal steps per batch without the limit: {m['nominal_steps_per_batch']})",
                )
            )
            out.append(
                (
                    sec,
                    f"{mode}: most batches in flight at once; creates spread over",
                    f"{m.get('max_batches_in_flight')} of {m['batches']}; "
                    f"{m.get('creates_spread_s')} s",
                )
            )
            lag = m["ended_to_seen_s"]
            out.append(
                (
                    sec,
                    f"{mode}: batch ended -> seen ended (mean / median / max)",
                    f"{lag['mean']} / {lag['median']} / {lag['max']} s",
                )
            )
        d = pol.get("direct")
        if d:
            out.append(
                (
                    sec,
                    "direct (SDK): calls to watch all batches end",
                    f"retrieve {d['retrieve_calls']} (median {d['retrieve_call_ms']} ms) vs list "
                    f"{d['list_calls']} (median {d['list_call_ms']} ms): {d['calls_ratio']}x fewer",
                )
            )
    cache = s.get("cache")
    if cache:
        sec = (
            f"Never paying twice ({cache['requests']:,} requests, {cache['distinct']:,} distinct; "
            "cache on)"
        )
        for label, what in (("first", "first job"), ("again", "the same job again")):
            c = cache[label]
            out.append(
                (
                    sec,
                    f"{what}: sent to the API; batches",
                    f"{c['sent_to_api']:,} requests; {c['batches_created']} batches "
                    f"({c['deduplicated']:,} repeats sent once, {c['cache_hits']:,} from the "
                    f"cache; {c['seconds']:.1f} s)",
                )
            )
            out.append(
                (
                    sec,
                    f"{what}: cost; saved",
                    f"${c['cost_usd']:.4f}; ${c['saved_usd']:.4f} (the job's status)",
                )
            )
    emu = s.get("emulator_speed")
    if emu:
        sec = f"Emulator create speed ({emu['requests']:,} requests, {_mb(emu['body_bytes'])})"
        out.append(
            (
                sec,
                "create: null server / emulator / ratio",
                f"{emu['null_server_create_s']:.2f} s / {emu['emulator_create_s']:.2f} s / "
                f"{emu['ratio']:.2f}x",
            )
        )
    out += table_ingest.rows(s)
    out += durable_writes.rows(s)
    out += task_events.rows(s)
    return out


def print_table(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    m = report["machine"]
    table = Table(
        title=f"Batchline benchmark: {m['nproc']} CPUs ({m['cpu']}), "
        f"{m['ram_bytes'] / 1e9:.0f} GB RAM, load average {m['load_average']}",
        title_justify="left",
    )
    table.add_column("Measure", overflow="fold")
    table.add_column("Value", overflow="fold")
    last = None
    for section, measure, value in report["rows"]:
        if section != last:
            if last is not None:
                table.add_section()
            table.add_row(f"[bold]{section}[/bold]", "")
            last = section
        table.add_row("  " + measure, value)
    table.add_section()
    table.add_row("[bold]Targets (ratios from this run)[/bold]", "")
    for t in report["targets"]:
        colour = {"pass": "green", "miss": "red"}.get(t["result"], "yellow")
        value = "-" if t["value"] is None else f"{t['value']:g}{t['unit']}"
        table.add_row(
            f"  {t['target']} ({t['wanted']})",
            f"{value} [{colour}]{t['result']}[/{colour}]" + (f"; {t['note']}" if t["note"] else ""),
        )
    console.print(table)
    for note in report.get("notes", []):
        console.print(f"- {note}")


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


def markdown(report: dict[str, Any]) -> str:
    """The same table as Markdown (for the README)."""
    m = report["machine"]
    lines = [
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_bytes'] / 1e9:.0f} GB RAM, "
        f"Python {m['python']}; load average at the end {m['load_average']}.",
        "",
        "| section | measure | value |",
        "| --- | --- | --- |",
    ]
    last = None
    for section, measure, value in report["rows"]:
        lines.append(f"| {section if section != last else ''} | {measure} | {value} |")
        last = section
    lines += ["", "| target | wanted | this run | result |", "| --- | --- | --- | --- |"]
    for t in report["targets"]:
        value = "-" if t["value"] is None else f"{t['value']:g}{t['unit']}"
        lines.append(f"| {t['target']} | {t['wanted']} | {value} | {t['result']} |")
    if report.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"
