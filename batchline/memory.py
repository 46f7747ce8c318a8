"""Redis memory against its `maxmemory`: a job that would not fit is refused before anything of
it is stored, and the stage that fills Redis (storing a batch's results) waits while Redis is
near full, so the writes that empty it (recording results) keep room.

Redis is both the broker and the job state, with the `noeviction` policy: when it is full,
writes fail (`OOM command not allowed`) rather than drop queued tasks or job state. Batchline
keeps it from getting there: `redis_memory_high_water` (a fraction of `maxmemory`) is where
submits are refused and results downloads pause.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from batchline.errors import JobRefused

# What one stored request costs besides its compressed body (hash entries, chunk lists),
# and how much of an upload's compressed size its stored requests take again.
PER_REQUEST_BYTES = 300
STORED_PER_UPLOADED = 1.2


@dataclass(frozen=True)
class Memory:
    """Used bytes, the limit (0: none), and the high-water mark in bytes."""

    used: int
    limit: int
    high_water: int

    @property
    def high(self) -> bool:
        return bool(self.limit) and self.used >= self.high_water

    def describe(self) -> str:
        if not self.limit:
            return f"{_mb(self.used)} used, no maxmemory"
        return (
            f"{_mb(self.used)} used of maxmemory {_mb(self.limit)} "
            f"({100 * self.used / self.limit:.0f}%)"
        )


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def memory(r: redis.Redis, high_water: float) -> Memory:
    """Redis's memory now (INFO memory)."""
    info: Any = r.info("memory")
    used = int(info.get("used_memory") or 0)
    limit = int(info.get("maxmemory") or 0)
    return Memory(used, limit, int(limit * high_water))


def check_room(r: redis.Redis, high_water: float, needed: int, what: str) -> None:
    """Refuse (JobRefused) when `needed` more bytes would take Redis past its high-water mark."""
    m = memory(r, high_water)
    if m.limit and m.used + needed > m.high_water:
        raise JobRefused(
            f"Redis memory: {m.describe()}; {what} needs about {_mb(needed)} more and "
            f"Batchline keeps Redis under {100 * high_water:.0f}% of maxmemory "
            "(BATCHLINE_REDIS_MEMORY_HIGH_WATER); nothing was stored. Raise maxmemory, or "
            "wait for running jobs to finish (`batchline jobs`)"
        )


def refusal(exc: redis.exceptions.OutOfMemoryError, what: str) -> JobRefused:
    """The refusal for a write Redis turned down for memory."""
    return JobRefused(
        f"Redis memory: Redis is full (maxmemory reached) and refused to store {what}: {exc}; "
        "nothing was kept. Raise maxmemory, or wait for running jobs to finish"
    )


def job_needs(uploaded_bytes: int, requests_hint: int = 0) -> int:
    """About how many bytes a job's requests take in Redis, from its compressed upload."""
    return int(uploaded_bytes * STORED_PER_UPLOADED) + PER_REQUEST_BYTES * requests_hint
