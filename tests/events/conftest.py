"""Fixtures for event and webhook tests: a real receiver, fast delivery settings, publishing."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from batchline import events
from batchline.events import EventKeys
from tests.events.receiver import Receiver


def whsec(seed: bytes) -> str:
    return "whsec_" + base64.b64encode(seed * (32 // len(seed))).decode()


JOB_SECRET = whsec(b"job-secret-0123456789abcdef.....")
SUB_SECRET = whsec(b"subscription-0123456789abcdef...")
OLD_SUB_SECRET = whsec(b"old-subscription-0123456789abcde")

# Retries in fractions of a second, set through configuration like any deployment would.
FAST_HOOKS: dict[str, Any] = {
    "webhook_allow_loopback": True,
    "webhook_secret": JOB_SECRET,
    "webhook_retry_schedule_s": [0.3, 0.6],
    "webhook_retry_jitter": 0,
    "webhook_timeout_s": 2,
    "webhook_lease_s": 4,
    "webhook_scheduler_interval_s": 0.2,
    "progress_event_interval_s": 0,
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rcv = Receiver().start()
    yield rcv
    rcv.stop()


def publish(stack: Any, job_id: str, type_: str, **data: Any) -> events.Event:
    """Emit an event the way a pipeline step does, and wake the dispatcher."""
    event = events.new_event(job_id, type_, {"metadata": None, **data})
    _, wake = events.emit(stack.redis.client(), EventKeys("bl"), event, 3600)
    if wake:
        stack.client.app.send_task("batchline.dispatch_event")
    return event
