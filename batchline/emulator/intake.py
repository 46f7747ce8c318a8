"""The body of a create call: read within the size limit, parsed, checked as the API checks it."""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from aiohttp import web

from batchline.emulator.outcomes import Evaluator, RequestRecord
from batchline.emulator.wire import ApiError

CUSTOM_ID_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
CUSTOM_ID_RULE = "^[a-zA-Z0-9_-]{1,64}$"
_READ_CHUNK_BYTES = 1 << 20


def _too_large(max_body_bytes: int) -> ApiError:
    return ApiError(413, f"Request body exceeds the maximum size of {max_body_bytes} bytes")


async def drain(request: web.Request) -> None:
    """Read and discard what is left of a body, so the client sees the answer, not a reset."""
    while await request.content.readany():
        pass


async def read_body(request: web.Request, max_body_bytes: int) -> bytearray:
    """The whole body, or a 413 once it passes max_body_bytes (read to the end either way)."""
    declared = request.content_length
    if declared is not None and declared > max_body_bytes:
        await drain(request)
        raise _too_large(max_body_bytes)
    buffer = bytearray()
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        buffer += chunk
        if len(buffer) > max_body_bytes:
            await drain(request)
            raise _too_large(max_body_bytes)
    return buffer


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a large body becomes objects: the collector
    would otherwise walk the growing tree again and again (it more than doubles the time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_requests(body: bytes | bytearray, max_requests: int) -> list[Any]:
    """The `requests` list of a create body; 400 or 413 when the call as a whole is refused."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"Request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "Request body must be a JSON object")
    requests = payload.get("requests")
    if requests is None:
        raise ApiError(400, "requests: Field required")
    if not isinstance(requests, list):
        raise ApiError(400, "requests: Input should be a valid list")
    if not requests:
        raise ApiError(400, "requests: List should have at least 1 item")
    if len(requests) > max_requests:
        raise ApiError(
            413, f"requests: a batch holds at most {max_requests} requests, got {len(requests)}"
        )
    return requests


def evaluate_requests(requests: list[Any], evaluator: Evaluator) -> list[RequestRecord]:
    """One record per request; 400 naming the first malformed or duplicate custom_id."""
    records: list[RequestRecord] = []
    append = records.append
    seen: set[str] = set()
    fullmatch = CUSTOM_ID_RE.fullmatch
    evaluate = evaluator.evaluate
    for index, item in enumerate(requests):
        if type(item) is not dict:
            raise ApiError(400, f"requests.{index}: Input should be an object")
        custom_id = item.get("custom_id")
        if type(custom_id) is not str or fullmatch(custom_id) is None:
            raise ApiError(
                400,
                f"requests.{index}.custom_id: invalid custom_id {custom_id!r}: "
                f"it must match {CUSTOM_ID_RULE}",
            )
        if custom_id in seen:
            raise ApiError(
                400,
                f"requests.{index}.custom_id: duplicate custom_id {custom_id!r}: "
                "each custom_id must be unique within the batch",
            )
        seen.add(custom_id)
        params = item.get("params")
        if type(params) is not dict:
            raise ApiError(400, f"requests.{index}.params: Input should be an object")
        append(evaluate(custom_id, params))
    return records
