"""One rate limit and one processing-queue cap for the whole fleet, kept in Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

import redis

from batchline import logs
from batchline import scripts as lua
from batchline.errors import RateLimited
from batchline.messaging.names import TaskName
from batchline.store import Store

# Sends a task now: (task name, args).
Send = Callable[[str, tuple[Any, ...]], object]

# The API counts calls per minute as they arrive; a token is taken a moment before the call
# is sent, so a token is held a little longer than the minute to absorb that delay.
WINDOW_MS = 62_000


class Limiter:
    """Tokens for calls to the batch endpoints, shared by every worker of the fleet."""

    def __init__(self, store: Store, send: Send | None = None):
        self.store = store
        self.fleet = store.fleet
        self.send = send  # sends the creates of parked chunks that room was made for

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

    def count_api_error(self, endpoint: str, kind: str) -> None:
        """One failed API call (api.translated tells its kind), counted fleet-wide. A Redis
        error here is logged, never raised: the caller handles the API's error."""
        try:
            self.store.r.hincrby(self.fleet.stats, f"api_errors:{endpoint}:{kind}", 1)
        except redis.RedisError as exc:
            logs.warning("metrics.count_failed", counter="api_errors", error=str(exc))

    def pause(self, seconds: float) -> None:
        """Hold every worker's calls for `seconds` (a 429's retry-after)."""
        self.store.r.hincrby(self.fleet.stats, "api_429", 1)
        lua.PAUSE(
            self.store.r, lua.PauseKey(self.fleet.pause), lua.PauseArgs(max(1, int(seconds * 1000)))
        )

    @property
    def _admission(self) -> lua.AdmissionKeys:
        f = self.fleet
        return lua.AdmissionKeys(f.admission, f.in_flight, f.admission_sizes, f.admission_parked)

    def enqueue(self, chunks: Iterable[tuple[str, int]]) -> None:
        """Put chunks (ref, requests) in line for the processing queue, in the order given
        (each once)."""
        flat: list[str | int] = []
        for ref, requests in chunks:
            flat += (ref, requests)
        for start in range(0, len(flat), 2000):
            lua.ENQUEUE(self.store.r, self._admission, lua.NoArgs(), flat[start : start + 2000])

    def admit(self, ref: str, requests: int) -> bool:
        """True when the chunk may be created now: it and every chunk ahead of it in line fit
        under the queue cap. A chunk refused is parked: the release (or admission) that makes
        room for it sends its create again at once."""
        cap = self.store.settings.max_in_flight_requests
        answer = lua.ADMIT(self.store.r, self._admission, lua.AdmitArgs(ref, requests, cap))
        admitted = bool(int(answer[0]))
        if admitted:
            self._wake(answer[1:])
        return admitted

    def release(self, ref: str) -> None:
        """The chunk's requests left the processing queue (ended, failed or never sent): the
        parked chunks that now fit, in order, have their creates sent now."""
        cap = self.store.settings.max_in_flight_requests
        self._wake(lua.ADMIT_RELEASE(self.store.r, self._admission, lua.AdmitReleaseArgs(ref, cap)))

    def _wake(self, refs: list[Any]) -> None:
        if self.send is None:
            return  # no dispatcher here (a console): their next try admits them
        for raw in refs:
            job_id, _, number = (raw.decode() if isinstance(raw, bytes) else raw).rpartition(":")
            self.send(TaskName.CREATE_BATCH, (job_id, int(number)))

    def held(self) -> int:
        return sum(int(v) for v in self.store.r.hvals(self.fleet.in_flight))
