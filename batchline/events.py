"""Job events (job.created, batch.ended, ...) appended to a Redis stream for consumers."""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis

from batchline.wire import dumps

STREAM_SUFFIX = "events"


def stream_key(prefix: str) -> str:
    return f"{prefix}:{STREAM_SUFFIX}"


def new_event(job_id: str, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": type_,
        "timestamp": time.time(),
        "job_id": job_id,
        "data": data,
    }


def emit(
    r: redis.Redis, prefix: str, job_id: str, type_: str, data: dict[str, Any], retention_s: int
) -> dict[str, Any]:
    """Append an event to the stream, trimming entries older than the retention by MINID."""
    evt = new_event(job_id, type_, data)
    min_id = f"{int((time.time() - retention_s) * 1000)}-0"
    r.xadd(stream_key(prefix), {"event": dumps(evt)}, minid=min_id, approximate=True)
    return evt
