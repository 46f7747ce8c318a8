"""When to try a webhook again: a growing schedule with jitter that honours Retry-After."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from batchline.settings import Settings

# Even a receiver's Retry-After never holds a delivery longer than this past the schedule.
MAX_RETRY_AFTER_S = 86400.0


@dataclass(frozen=True)
class RetrySchedule:
    """Waits before each retry (after the first attempt); jitter is a fraction of each wait."""

    waits_s: tuple[float, ...]
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if any(w <= 0 for w in self.waits_s):
            raise ValueError("every wait must be positive")
        if not 0 <= self.jitter <= 0.5:
            raise ValueError("jitter must be between 0 and 0.5")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetrySchedule:
        return cls(tuple(settings.webhook_retry_schedule_s), settings.webhook_retry_jitter)

    @property
    def max_attempts(self) -> int:
        return len(self.waits_s) + 1

    def next_wait_s(
        self, failures: int, retry_after_s: float | None = None, rng: random.Random | None = None
    ) -> float | None:
        """The wait after the `failures`-th failed attempt; None when that was the last."""
        if failures < 1:
            raise ValueError("failures counts from 1")
        if failures > len(self.waits_s):
            return None
        base = self.waits_s[failures - 1]
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        wait = base * (1 + spread)
        if retry_after_s is not None:
            cap = max(max(self.waits_s), MAX_RETRY_AFTER_S)
            wait = max(wait, min(retry_after_s, cap))
        return wait


def describe(waits_s: Sequence[float]) -> str:
    """`at once, 5 s, 5 min, ...` for docs and the CLI."""

    def one(s: float) -> str:
        if s >= 3600 and s % 3600 == 0:
            return f"{s / 3600:g} h"
        if s >= 60 and s % 60 == 0:
            return f"{s / 60:g} min"
        return f"{s:g} s"

    return ", ".join(["at once", *(one(s) for s in waits_s)])
