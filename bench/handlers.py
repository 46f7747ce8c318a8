"""The result handlers both sides call: a no-op, and one that waits 10 ms on I/O."""

from __future__ import annotations

import time
from typing import Any

IO_WAIT_S = 0.010


def noop_handler(custom_id: str, result: Any) -> None:
    """Does nothing: what is measured is the machinery around it."""


def io_handler(custom_id: str, result: Any) -> None:
    """Waits 10 ms without using the CPU, like a call to a database or another service."""
    time.sleep(IO_WAIT_S)


HANDLERS = {"noop": noop_handler, "io": io_handler}
