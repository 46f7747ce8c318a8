"""Polling with many batches in flight: calls per minute against the fleet limit, and polls
per batch per backoff step, for each polling mode; plus list vs retrieve measured directly.

One job is cut into `batches` small chunks (max_batch_requests) on an emulator whose batches
take `processing_s` to end and which enforces the same per-minute limit (a 429 from it means
the fleet limiter let too much through). A mode is a name and extra BATCHLINE_* settings,
e.g. ("list", {"poll_mode": "list"}) once the pipeline has list-based polling.
"""

from __future__ import annotations

import heapq
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic

from batchline.client import Client
from batchline.devstack import EMULATOR_KEY
from batchline.settings import Settings
from batchline.store import FINAL_JOB_STATES
from bench.jobgen import write_job
from bench.stack import close_client, stack

WINDOW_S = 60.0
STATUS_ENDPOINTS = ("retrieve", "list")
ONE_REQUEST: list[Any] = [
    {
        "custom_id": "r0",
        "params": {
            "model": "claude-haiku-4-5",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}],
        },
    }
]


@dataclass(frozen=True)
class PollingConfig:
    batches: int = 200
    requests_per_batch: int = 5
    processing_s: float = 60.0
    api_rpm: int = 600
    poll_interval_s: float = 1.0
    poll_max_interval_s: float = 8.0
    workers: int = 2
    # The direct SDK comparison needs no rate limit or admission line: its batches end sooner.
    direct_processing_s: float = 60.0
    modes: dict[str, dict[str, Any]] = field(default_factory=lambda: {"retrieve": {}})


def max_in_window(times: list[float], window_s: float = WINDOW_S) -> int:
    """The most events inside any window of `window_s` seconds."""
    times = sorted(times)
    best = 0
    lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def max_overlap(spans: list[tuple[float, float]]) -> int:
    """The most intervals (start, end) open at one moment."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    best = cur = 0
    for _, step in edges:
        cur += step
        best = max(best, cur)
    return best


def schedule_steps(cfg: PollingConfig) -> int:
    """Backoff steps a batch ending after processing_s needs at the nominal schedule."""
    elapsed, step = 0.0, 0
    while True:
        elapsed += min(cfg.poll_max_interval_s, cfg.poll_interval_s * 2**step)
        step += 1
        if elapsed >= cfg.processing_s:
            return step


def run_mode(
    workdir: Path, cfg: PollingConfig, mode: str, settings: dict[str, Any]
) -> dict[str, Any]:
    """One job of cfg.batches batches through the pipeline in one polling mode."""
    count = cfg.batches * cfg.requests_per_batch
    job = write_job(workdir / "job.jsonl", count)
    emulator_args = (
        "--processing-seconds", str(cfg.processing_s), "--rpm-limit", str(cfg.api_rpm),
    )  # fmt: skip
    with stack(
        workdir,
        *emulator_args,
        max_batch_requests=cfg.requests_per_batch,
        api_rpm=cfg.api_rpm,
        poll_interval_s=cfg.poll_interval_s,
        poll_max_interval_s=cfg.poll_max_interval_s,
        visibility_timeout_s=int(max(600, 4 * cfg.poll_max_interval_s)),
        **settings,
    ) as st:
        st.worker(name="batchline", concurrency=cfg.workers)
        client = Client(Settings(redis_url=st.redis.url, max_batch_requests=cfg.requests_per_batch))
        job_id = f"bench-poll-{mode}"
        t0 = time.time()
        client.submit(job.path, job_id=job_id, timeout_s=300)
        timeout = cfg.processing_s + cfg.batches * WINDOW_S / cfg.api_rpm * 4 + 300
        st.wait(
            lambda: client.store.job_state(job_id) in FINAL_JOB_STATES,
            timeout,
            f"polling job ({mode})",
            interval_s=0.2,
        )
        elapsed = time.time() - t0
        calls = st.emulator.calls()
        emu = st.emulator.stats()
        chunks = client.store.chunks(job_id)
        counts = client.status(job_id)["counts"]
        close_client(client)
    every = [c["t"] for c in calls]
    status_calls = [c for c in calls if c["endpoint"] in STATUS_ENDPOINTS]
    steps = sum(c.number_field("poll_step") + 1 for c in chunks)
    by_endpoint: dict[str, int] = {}
    for c in calls:
        by_endpoint[c["endpoint"]] = by_endpoint.get(c["endpoint"], 0) + 1
    peak = max_in_window(every)
    lags = sorted(
        c.time_field("seen_ended_at") - c.time_field("ended_at")
        for c in chunks
        if c.fields.get("seen_ended_at") and c.fields.get("ended_at")
    )
    spans = [
        (c.time_field("created_at"), c.time_field("seen_ended_at"))
        for c in chunks
        if c.fields.get("created_at") and c.fields.get("seen_ended_at")
    ]
    status_times = [c["t"] for c in status_calls]
    return {
        "mode": mode,
        "settings": settings,
        "batches": len(chunks),
        "requests": count,
        "succeeded": counts["succeeded"],
        "seconds": round(elapsed, 1),
        "api_rpm": cfg.api_rpm,
        "calls": by_endpoint,
        "calls_429": int(emu.get("rate_limited", 0)),
        "peak_calls_per_minute": peak,
        "within_limit": peak <= cfg.api_rpm,
        "status_calls": len(status_calls),
        "status_calls_per_batch": round(len(status_calls) / max(1, len(chunks)), 2),
        "poll_steps_recorded": steps,
        "status_calls_per_step": round(len(status_calls) / max(1, steps), 3),
        "nominal_steps_per_batch": schedule_steps(cfg),
        "ended_to_seen_s": {
            "mean": round(sum(lags) / len(lags), 2) if lags else None,
            "median": round(lags[len(lags) // 2], 2) if lags else None,
            "max": round(lags[-1], 2) if lags else None,
        },
        "max_batches_in_flight": max_overlap(spans),
        "status_calls_per_minute": (
            round(len(status_times) / (max(status_times) - min(status_times)) * 60, 1)
            if len(status_times) > 1 and max(status_times) > min(status_times)
            else None
        ),
        "creates_spread_s": round(max(s for s, _ in spans) - min(s for s, _ in spans), 1)
        if spans
        else None,
    }


def direct_list_vs_retrieve(workdir: Path, cfg: PollingConfig) -> dict[str, Any]:
    """The same batches watched two ways at once through the SDK, without a rate limit: one
    retrieve per batch per backoff step, against one list page (up to 1,000) per step."""
    processing_s = min(cfg.processing_s, cfg.direct_processing_s)
    with stack(workdir / "direct", "--processing-seconds", str(processing_s)) as st:

        def sdk() -> anthropic.Anthropic:
            return anthropic.Anthropic(
                base_url=st.emulator.base_url, api_key=EMULATOR_KEY, max_retries=2
            )

        creator = sdk()
        ids = [creator.messages.batches.create(requests=ONE_REQUEST).id for _ in range(cfg.batches)]  # type: ignore[arg-type]
        results: dict[str, Any] = {}
        by_retrieve, by_list = sdk(), sdk()
        threads = [
            threading.Thread(
                target=lambda: results.update(retrieve=_by_retrieve(by_retrieve, ids, cfg))
            ),
            threading.Thread(target=lambda: results.update(list=_by_list(by_list, ids, cfg))),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    r, ls = results["retrieve"], results["list"]
    return {
        "batches": cfg.batches,
        "processing_s": processing_s,
        "retrieve_calls": r["calls"],
        "list_calls": ls["calls"],
        "calls_ratio": round(r["calls"] / max(1, ls["calls"]), 1),
        "retrieve_call_ms": r["call_ms"],
        "retrieve_max_call_ms": r["max_call_ms"],
        "list_call_ms": ls["call_ms"],
        "list_max_call_ms": ls["max_call_ms"],
        "retrieve_saw_all_ended_after_s": r["seconds"],
        "list_saw_all_ended_after_s": ls["seconds"],
    }


def _delay(cfg: PollingConfig, step: int) -> float:
    return min(cfg.poll_max_interval_s, cfg.poll_interval_s * 2**step)


def _by_retrieve(client: anthropic.Anthropic, ids: list[str], cfg: PollingConfig) -> dict[str, Any]:
    t0 = time.monotonic()
    due = [(t0 + _delay(cfg, 0), batch_id, 0) for batch_id in ids]
    heapq.heapify(due)
    spent: list[float] = []
    while due:
        at, batch_id, step = heapq.heappop(due)
        time.sleep(max(0.0, at - time.monotonic()))
        started = time.monotonic()
        status = client.messages.batches.retrieve(batch_id).processing_status
        spent.append(time.monotonic() - started)
        if status != "ended":
            heapq.heappush(due, (time.monotonic() + _delay(cfg, step + 1), batch_id, step + 1))
    return _calls(spent, t0)


def _calls(spent: list[float], t0: float) -> dict[str, Any]:
    spent = sorted(spent)
    return {
        "calls": len(spent),
        "call_ms": round(spent[len(spent) // 2] * 1000, 2) if spent else None,
        "max_call_ms": round(spent[-1] * 1000, 2) if spent else None,
        "seconds": round(time.monotonic() - t0, 1),
    }


def _by_list(client: anthropic.Anthropic, ids: list[str], cfg: PollingConfig) -> dict[str, Any]:
    t0 = time.monotonic()
    waiting = set(ids)
    step = 0
    spent: list[float] = []
    while waiting:
        time.sleep(_delay(cfg, step))
        step += 1
        after: str | None = None
        while True:
            started = time.monotonic()
            page = client.messages.batches.list(
                limit=1000, **({"after_id": after} if after else {})
            )
            spent.append(time.monotonic() - started)
            for b in page.data:
                if b.processing_status == "ended":
                    waiting.discard(b.id)
            if not page.has_more or not page.data or not waiting:
                break
            after = page.last_id
    return _calls(spent, t0)


def run(workdir: Path, cfg: PollingConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "config": {
            "batches": cfg.batches,
            "requests_per_batch": cfg.requests_per_batch,
            "processing_s": cfg.processing_s,
            "api_rpm": cfg.api_rpm,
            "poll_interval_s": cfg.poll_interval_s,
            "poll_max_interval_s": cfg.poll_max_interval_s,
        },
        "modes": {},
    }
    for mode, settings in cfg.modes.items():
        out["modes"][mode] = run_mode(workdir / mode, cfg, mode, settings)
    out["direct"] = direct_list_vs_retrieve(workdir, cfg)
    return out
