"""Counters and a call log, so tests can see what clients did to the emulator."""

from __future__ import annotations

from collections import Counter
from typing import Any

from batchline.emulator.config import ENDPOINTS

DROPPED = "dropped"  # the status recorded for a call whose connection was cut


class KeyStats:
    """What one API key did, named by its key_id so that no key is ever shown."""

    def __init__(self) -> None:
        self.batches_created = 0
        self.requests_received = 0
        self.calls: Counter[str] = Counter({endpoint: 0 for endpoint in ENDPOINTS})

    def to_json(self) -> dict[str, Any]:
        return {
            "batches_created": self.batches_created,
            "requests_received": self.requests_received,
            "calls": dict(self.calls),
        }


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
        self.by_key: dict[str, KeyStats] = {}
        # t is the host's clock, not the server's shifted one: comparable with the tests' own.
        self.call_log: list[tuple[float, str, int | str, str | None]] = []

    def _key(self, key_id: str) -> KeyStats:
        stats = self.by_key.get(key_id)
        if stats is None:
            stats = self.by_key[key_id] = KeyStats()
        return stats

    def record_call(
        self, t: float, endpoint: str, status: int | str, key_id: str | None = None
    ) -> None:
        """One call; key_id is the key it was made with, refused ones included."""
        self.calls[endpoint] += 1
        self.responses_by_status[str(status)] += 1
        self.call_log.append((t, endpoint, status, key_id))
        if key_id is not None:
            self._key(key_id).calls[endpoint] += 1

    def record_batch(self, key_id: str, request_count: int) -> None:
        self.batches_created += 1
        self.requests_received += request_count
        key = self._key(key_id)
        key.batches_created += 1
        key.requests_received += request_count

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
            "by_key": {key_id: stats.to_json() for key_id, stats in self.by_key.items()},
        }

    def calls_json(self) -> list[dict[str, Any]]:
        return [
            {"t": t, "endpoint": endpoint, "status": status, "key_id": key_id}
            for t, endpoint, status, key_id in self.call_log
        ]
