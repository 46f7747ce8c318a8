"""The requests-per-minute limit shared by every batch endpoint: a sliding 60-second window."""

from __future__ import annotations

import math
from collections import deque

from batchline.emulator.wire import rfc3339

WINDOW_S = 60.0


class RateLimiter:
    """Admits at most `limit` calls in any WINDOW_S seconds; refused calls take no slot."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._admitted: deque[float] = deque()

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        while self._admitted and self._admitted[0] <= horizon:
            self._admitted.popleft()

    def try_acquire(self, limit: int, now: float) -> float | None:
        """None when the call is admitted, else the seconds until a slot frees."""
        self._expire(now)
        if len(self._admitted) >= limit:
            return max(0.0, self._admitted[0] + self.window_s - now)
        self._admitted.append(now)
        return None

    def headers(self, limit: int, now: float, clock_offset_s: float = 0.0) -> dict[str, str]:
        """The anthropic-ratelimit-requests-* headers as of now; the reset time is written
        on the server's clock, clock_offset_s from the one the window runs on."""
        self._expire(now)
        full_at = self._admitted[-1] + self.window_s if self._admitted else now
        return {
            "anthropic-ratelimit-requests-limit": str(limit),
            "anthropic-ratelimit-requests-remaining": str(max(0, limit - len(self._admitted))),
            "anthropic-ratelimit-requests-reset": rfc3339(full_at + clock_offset_s),
        }

    def reset(self) -> None:
        self._admitted.clear()


def retry_after_header(seconds: float, minimum_s: int = 0) -> str:
    """Whole seconds, rounded up: a client that waits that long will be let through."""
    return str(max(minimum_s, math.ceil(seconds)))
