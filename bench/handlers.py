"""The result handlers both sides call: a no-op, and one that waits 10 ms on I/O.

`sleep10` is the same 10 ms wait as Batchline's in-process handler (the job option
`handler`, called `handler(job_id, custom_id, record)` on the results workers, in threads):
it counts each call in the stack's Redis (bench.counting) so the harness sees the last one end.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import redis

from bench.counting import Counter

IO_WAIT_S = 0.010
# Where the in-process handler counts its calls; the path the bench gives the job option.
INPROCESS_COUNTER = Counter("inprocess")
SLEEP10 = "bench.handlers:sleep10"


def noop_handler(custom_id: str, result: Any) -> None:
    """Does nothing: what is measured is the machinery around it."""


def io_handler(custom_id: str, result: Any) -> None:
    """Waits 10 ms without using the CPU, like a call to a database or another service."""
    time.sleep(IO_WAIT_S)


HANDLERS = {"noop": noop_handler, "io": io_handler}

_local = threading.local()


def _redis() -> redis.Redis:
    """One connection per handler thread, to the Redis the results worker uses."""
    r: redis.Redis | None = getattr(_local, "r", None)
    if r is None:
        r = _local.r = redis.Redis.from_url(
            os.environ.get("BATCHLINE_REDIS_URL", "redis://127.0.0.1:6379/0")
        )
    return r


def sleep10(job_id: str, custom_id: str, record: Any) -> None:
    """Batchline's in-process handler for the 10 ms runs: the I/O wait, then count the call."""
    started = time.time()
    io_handler(custom_id, record)
    INPROCESS_COUNTER.record(_redis(), started, time.time())
