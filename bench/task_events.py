"""What Flower's view of the result stage costs: one job through Batchline with the workers'
task events on (the default: every stage's tasks, one task per group of results) and off
(BATCHLINE_TASK_EVENTS=false), each on a stack of its own, in turns (on, off, then off, on,
...) so that a change in the machine's load falls on both alike. Reported: the result stage's
requests per second of each run, their medians, and what the events cost in percent.

    .venv/bin/python -m bench --only task_events [--requests N]
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import batchline_run
from bench.jobgen import Job

ROUNDS = 2
QUICK_ROUNDS = 1
MAX_REQUESTS = 30_000  # each round runs the job twice: the stage's rate is steady by then
COST_LIMIT_PCT = 10.0


def run(workdir: Path, job: Job, workers: int, topology: str, rounds: int) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"on": [], "off": []}
    for i in range(rounds):
        for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
            out = batchline_run.run(
                workdir / f"{mode}-{i}", job, workers, topology=topology, task_events=mode == "on"
            )
            rates[mode].append(float(out["stages"]["result_processing"]["requests_per_s"]))
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    return {
        "requests": job.count,
        "rounds": rounds,
        "requests_per_s": rates,
        "median_on": on,
        "median_off": off,
        "cost_pct": (off - on) / off * 100 if off else None,
    }


def rows(sections: dict[str, Any]) -> list[tuple[str, str, str]]:
    te = sections.get("task_events")
    if not te:
        return []
    sec = f"Task events for Flower ({te['requests']:,} requests, {te['rounds']} round(s))"
    per_s = te["requests_per_s"]
    rates = {mode: ", ".join(f"{v:,.0f}/s" for v in vs) for mode, vs in per_s.items()}
    return [
        (sec, "result stage, events on (default)", rates["on"]),
        (sec, "result stage, events off", rates["off"]),
        (sec, "cost of the events (medians)", f"{te['cost_pct']:+.1f}%"),
    ]


def targets(sections: dict[str, Any], target: Callable[..., dict[str, Any]]) -> list[Any]:
    te = sections.get("task_events")
    cost = te["cost_pct"] if te else None
    return [
        target(
            "Flower's task events: cost on the result stage's throughput",
            f"<= {COST_LIMIT_PCT:g}%",
            cost,
            lambda v: v <= COST_LIMIT_PCT,
            unit="%",
            note="median of on vs off, in turns; one task per group of results",
            applies=te is not None and te["requests"] >= 10_000,
        )
    ]
