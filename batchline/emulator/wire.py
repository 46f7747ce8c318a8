"""Wire formats shared by the emulator's handlers: ids, timestamps, JSON and error envelopes."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any

import orjson
from aiohttp import web

# Characters in ASCII order, so that ids of equal length sort like the numbers they encode.
_SORTABLE = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_TIME_CHARS = 12  # 62**12 microseconds is about 100 million years
_ID_RANDOM_CHARS = 10
KEY_ID_CHARS = 12

ERROR_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class ApiError(Exception):
    """Raised by a handler to answer with the API's error envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or error_type_for(status)
        self.headers = headers or {}


def error_type_for(status: int) -> str:
    """The API's error type for an HTTP status."""
    known = ERROR_TYPE_BY_STATUS.get(status)
    if known:
        return known
    return "api_error" if status >= 500 else "invalid_request_error"


def rfc3339(ts: float) -> str:
    """A Unix time as the API writes it: UTC, microseconds, `Z`."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def http_date(ts: float) -> str:
    """A Unix time as an HTTP Date header (RFC 7231 IMF-fixdate)."""
    return formatdate(ts, usegmt=True)


def key_id(api_key: str) -> str:
    """A short, stable name for an API key that does not reveal it: its SHA-256, cut short."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:KEY_ID_CHARS]


def _encode(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        chars.append(_SORTABLE[digit])
    return "".join(reversed(chars))


class BatchIdFactory:
    """Batch ids that sort by creation order (the list endpoint's cursors rely on it)."""

    def __init__(self) -> None:
        self._last_us = 0
        self._lock = threading.Lock()

    def new(self) -> str:
        with self._lock:
            now_us = time.time_ns() // 1000
            self._last_us = max(now_us, self._last_us + 1)
            stamp = self._last_us
        suffix = _encode(int.from_bytes(os.urandom(8), "big"), _ID_RANDOM_CHARS)
        return f"msgbatch_01{_encode(stamp, _ID_TIME_CHARS)}{suffix}"


def new_request_id() -> str:
    return "req_01" + os.urandom(11).hex()


def derived_id(prefix: str, *parts: str) -> str:
    """A stable id derived from its parts: the same batch gives the same result ids."""
    digest = hashlib.blake2b(":".join(parts).encode(), digest_size=11).hexdigest()
    return f"{prefix}_01{digest}"


def error_body(error_type: str, message: str, request_id: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": request_id,
    }


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(error: ApiError, request_id: str) -> web.Response:
    body = error_body(error.error_type, error.message, request_id)
    return json_response(body, status=error.status, headers=error.headers)
