"""The worker's app with a result that fails once: reading the stored line of a custom_id
containing "boom" raises the first time in this process. Every group handed to
record_outcomes is written to the Redis list `test:recorded`, one JSON list of ids a call."""

from __future__ import annotations

import os
from typing import Any

import orjson
import redis

from batchline.pipeline import results
from workers.app import app

__all__ = ["app"]

_r = redis.Redis.from_url(os.environ["BATCHLINE_REDIS_URL"])
_failed: set[bytes] = set()
_unpack, _record = results.unpack, results.record_outcomes


def unpack_once_failing(raw: bytes) -> bytes:
    line = _unpack(raw)
    if b"boom" in line and line not in _failed:
        _failed.add(line)
        raise ValueError("a result that cannot be processed (the first time)")
    return line


def record_and_note(ctx: Any, job_id: str, number: Any, outcomes: Any, **kw: Any) -> None:
    _r.rpush("test:recorded", orjson.dumps(sorted(outcomes)))
    _record(ctx, job_id, number, outcomes, **kw)


results.unpack = unpack_once_failing  # type: ignore[assignment]
results.record_outcomes = record_and_note  # type: ignore[assignment]
