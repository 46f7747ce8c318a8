"""The retry schedule: Svix's waits by default, jitter within bounds, Retry-After honoured."""

from __future__ import annotations

import random

import pytest

from batchline.settings import Settings
from batchline.webhooks.retry_schedule import RetrySchedule, describe


def test_the_default_schedule_is_svixs() -> None:
    schedule = RetrySchedule.from_settings(Settings())
    assert describe(schedule.waits_s) == "at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h"
    assert schedule.max_attempts == 8


def test_waits_grow_with_jitter_and_end_after_the_last_attempt() -> None:
    schedule = RetrySchedule((5, 300, 1800), jitter=0.2)
    rng = random.Random(7)
    for failures, base in ((1, 5), (2, 300), (3, 1800)):
        for _ in range(50):
            wait = schedule.next_wait_s(failures, rng=rng)
            assert wait is not None and base * 0.8 <= wait <= base * 1.2
    assert schedule.next_wait_s(4) is None


def test_retry_after_is_honoured_when_longer_and_capped() -> None:
    schedule = RetrySchedule((5, 300), jitter=0)
    assert schedule.next_wait_s(1, retry_after_s=60) == 60
    assert schedule.next_wait_s(1, retry_after_s=1) == 5
    assert schedule.next_wait_s(1, retry_after_s=10**9) == 86400


def test_a_bad_schedule_is_refused() -> None:
    with pytest.raises(ValueError):
        RetrySchedule((5, 0))
    with pytest.raises(ValueError):
        Settings(webhook_retry_schedule_s=[1, -1])
    with pytest.raises(ValueError):
        Settings(webhook_timeout_s=10, webhook_lease_s=5)
