"""In-process result handlers for tests (batchline.handlers): each call is written to Redis."""

from __future__ import annotations

import os
import time
from typing import Any

import orjson
import redis

_clients: dict[str, redis.Redis] = {}
SLOW_S = 12.0


def _redis() -> redis.Redis:
    url = os.environ["BATCHLINE_REDIS_URL"]
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url)
    return _clients[url]


def record(job_id: str, custom_id: str, rec: dict[str, Any]) -> None:
    """Push the call on `handled:JOB`; a custom_id starting with `boom` raises every time,
    one starting with `slow` then takes SLOW_S (a handler waiting on a slow service)."""
    r = _redis()
    r.rpush(f"handled:{job_id}", orjson.dumps({"custom_id": custom_id, "state": rec["state"]}))
    if custom_id.startswith("slow"):
        time.sleep(SLOW_S)
    if custom_id.startswith("boom"):
        raise RuntimeError(f"cannot take {custom_id}")


not_callable = 42
