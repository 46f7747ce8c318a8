"""One rate limit and one processing-queue cap for the whole fleet, kept in Redis."""

from __future__ import annotations

import uuid

from batchline import scripts as lua
from batchline.errors import RateLimited
from batchline.store import Store

# The API counts calls per minute as they arrive; a token is taken a moment before the call
# is sent, so a token is held a little longer than the minute to absorb that delay.
WINDOW_MS = 62_000


class Limiter:
    """Tokens for calls to the batch endpoints, shared by every worker of the fleet."""

    def __init__(self, store: Store):
        self.store = store
        self.fleet = store.fleet

    def take(self, endpoint: str) -> None:
        """Take a token for one API call, or raise RateLimited saying how long to wait."""
        wait_ms = lua.ACQUIRE(
            self.store.r,
            lua.AcquireKeys(self.fleet.calls, self.fleet.pause),
            lua.AcquireArgs(self.store.settings.api_rpm, WINDOW_MS, uuid.uuid4().hex),
        )
        if wait_ms:
            raise RateLimited(
                f"fleet rate limit: no token for {endpoint}", retry_after_s=int(wait_ms) / 1000
            )
        self.store.r.hincrby(self.fleet.stats, f"api_calls:{endpoint}", 1)

    def pause(self, seconds: float) -> None:
        """Hold every worker's calls for `seconds` (a 429's retry-after)."""
        self.store.r.hincrby(self.fleet.stats, "api_429", 1)
        lua.PAUSE(
            self.store.r, lua.PauseKey(self.fleet.pause), lua.PauseArgs(max(1, int(seconds * 1000)))
        )

    def enqueue(self, refs: list[str]) -> None:
        """Put chunks in line for the processing queue, in the order given (each once)."""
        for start in range(0, len(refs), 1000):
            lua.ENQUEUE(
                self.store.r,
                lua.AdmissionKeys(self.fleet.admission, self.fleet.in_flight),
                lua.NoArgs(),
                refs[start : start + 1000],
            )

    def admit(self, ref: str, requests: int) -> bool:
        """True when the chunk may be created now: first in line and under the queue cap."""
        return bool(
            lua.ADMIT(
                self.store.r,
                lua.AdmissionKeys(self.fleet.admission, self.fleet.in_flight),
                lua.AdmitArgs(ref, requests, self.store.settings.max_in_flight_requests),
            )
        )

    def release(self, ref: str) -> None:
        """The chunk's requests left the processing queue (ended, failed or never sent)."""
        pipe = self.store.r.pipeline(transaction=False)
        pipe.hdel(self.fleet.in_flight, ref)
        pipe.lrem(self.fleet.admission, 0, ref)
        pipe.execute()

    def held(self) -> int:
        return sum(int(v) for v in self.store.r.hvals(self.fleet.in_flight))
