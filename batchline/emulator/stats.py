"""Counters and a call log, so tests can see what clients did to the emulator."""

from __future__ import annotations

from collections import Counter
from typing import Any

from batchline.emulator.config import ENDPOINTS

DROPPED = "dropped"  # the status recorded for a call whose connection was cut


class Stats:
    """What the admin endpoints report; cleared by a reset."""

    def __init__(self) -> None:
        self.batches_created = 0
        self.requests_received = 0
        self.calls: Counter[str] = Counter({endpoint: 0 for endpoint in ENDPOINTS})
        self.responses_by_status: Counter[str] = Counter()
        self.rate_limited = 0
        self.queue_limited = 0
        self.faults_injected = 0
        self.faults_by_source: Counter[str] = Counter()
        self.call_log: list[tuple[float, str, int | str]] = []

    def record_call(self, t: float, endpoint: str, status: int | str) -> None:
        self.calls[endpoint] += 1
        self.responses_by_status[str(status)] += 1
        self.call_log.append((t, endpoint, status))

    def record_fault(self, source: str) -> None:
        self.faults_injected += 1
        self.faults_by_source[source] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "batches_created": self.batches_created,
            "requests_received": self.requests_received,
            "calls": dict(self.calls),
            "responses_by_status": dict(self.responses_by_status),
            "rate_limited": self.rate_limited,
            "queue_limited": self.queue_limited,
            "faults_injected": self.faults_injected,
            "faults_by_source": dict(self.faults_by_source),
        }

    def calls_json(self) -> list[dict[str, Any]]:
        return [
            {"t": t, "endpoint": endpoint, "status": status}
            for t, endpoint, status in self.call_log
        ]
