"""The Message Batches API through the official SDK; HTTP errors become Batchline's errors here."""

from __future__ import annotations

import email.utils
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from batchline.errors import (
    BatchNotFound,
    OutcomeUnknown,
    PermanentApiError,
    RetryableApiError,
)
from batchline.settings import Settings

if TYPE_CHECKING:
    import anthropic
    import httpx2
    from anthropic.types.messages import MessageBatch

# The SDK is imported when the API is first called, not when a worker starts: importing it
# takes over a second of CPU, and most workers (results, events) never call the API.
BATCHES_PATH = "/v1/messages/batches"


def make_client(settings: Settings) -> anthropic.Anthropic:
    """An SDK client from the SDK's own settings (ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL).

    The SDK's own retries sleep inside the calling thread; Batchline retries by
    rescheduling the task instead, so they are off unless configured.
    """
    import anthropic

    return anthropic.Anthropic(max_retries=settings.sdk_max_retries, timeout=settings.api_timeout_s)


def retry_after_s(headers: httpx2.Headers | None) -> float | None:
    """Seconds from a retry-after(-ms) header, if any."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _describe(exc: anthropic.APIStatusError) -> str:
    kind = exc.type or "error"
    msg = exc.api_message or exc.message
    return f"HTTP {exc.status_code} {kind}: {msg}"


# What a failed call met, as the fleet counts it (batchline_api_errors_total{kind}).
API_ERROR_KINDS = (
    "server_error",  # a 5xx other than 529, or a 200 whose body is not what was asked for
    "overloaded",  # 529
    "timeout",  # no answer in time (or a 408)
    "connection",  # the connection failed or dropped
    "rate_limited",  # 429
    "client_error",  # any other 4xx
)
# The endpoints as the limiter names them (batchline_api_calls_total{endpoint}).
API_ENDPOINTS = ("create", "retrieve", "results", "cancel", "list")

# Counts one failed call: (endpoint, kind). Set per client (count_errors), so each worker's
# errors go to its own fleet's Redis.
ErrorCounter = Callable[[str, str], None]
_error_counters: weakref.WeakKeyDictionary[Any, ErrorCounter] = weakref.WeakKeyDictionary()


def count_errors(client: Any, counter: ErrorCounter) -> None:
    """Have every failed call made with `client` counted once by `counter`."""
    _error_counters[client] = counter


def status_kind(status: int) -> str:
    """The kind of failure an HTTP status is (see API_ERROR_KINDS)."""
    if status == 429:
        return "rate_limited"
    if status == 529:
        return "overloaded"
    if status == 408:
        return "timeout"
    return "server_error" if status >= 500 else "client_error"


def _count(client: Any, endpoint: str, kind: str) -> None:
    counter = _error_counters.get(client) if client is not None else None
    if counter is not None:
        counter(endpoint, kind)


# Answers to a create that say nothing of whether the batch was made: a 5xx or a gateway
# timeout can come back after the API made it (so can a 408 or 409 from a proxy).
UNKNOWN_CREATE_STATUSES = frozenset({408, 409})


@contextmanager
def translated(client: Any = None, endpoint: str = "", *, create: bool = False) -> Iterator[None]:
    """Turn SDK exceptions into Batchline's retryable or permanent errors, each counted once
    for the client's fleet (count_errors) by endpoint and kind.

    For a create, every answer that does not prove the batch was refused (a 4xx other than
    408 and 409) or made (a valid 200) becomes OutcomeUnknown: reconcile before creating again.
    """
    import anthropic
    import httpx2

    try:
        yield
    except anthropic.APIStatusError as exc:
        status = exc.status_code
        _count(client, endpoint, status_kind(status))
        retryable = status in (408, 409, 429) or status >= 500
        should = exc.response.headers.get("x-should-retry")
        if should in ("true", "false"):
            retryable = should == "true"
        unknown = create and (status in UNKNOWN_CREATE_STATUSES or status >= 500)
        if retryable or unknown:
            cls = OutcomeUnknown if unknown else RetryableApiError
            raise cls(
                _describe(exc),
                retry_after_s=retry_after_s(exc.response.headers),
                status=status,
                error_type=exc.type,
            ) from None
        if status == 404:
            raise BatchNotFound(_describe(exc), status=status, error_type=exc.type) from None
        raise PermanentApiError(_describe(exc), status=status, error_type=exc.type) from None
    except anthropic.APIResponseValidationError as exc:  # a 200 whose body is not a batch
        _count(client, endpoint, "server_error")
        cls = OutcomeUnknown if create else RetryableApiError
        raise cls(f"unreadable answer: {exc.message}", status=exc.status_code) from None
    except anthropic.APIConnectionError as exc:  # timeouts included
        timeout = isinstance(exc, anthropic.APITimeoutError)
        _count(client, endpoint, "timeout" if timeout else "connection")
        cls = OutcomeUnknown if create else RetryableApiError
        raise cls(f"connection failed: {exc.message}") from None
    except httpx2.TransportError as exc:  # while reading a streamed body, past the SDK
        timeout = isinstance(exc, httpx2.TimeoutException)
        _count(client, endpoint, "timeout" if timeout else "connection")
        raise RetryableApiError(f"connection failed while reading: {exc}") from None


@cache
def _raw_lines() -> Any:
    """The results body as raw JSONL lines, read in large chunks (the SDK's decoder reads
    64-byte pieces and builds a model per line; the pipeline only needs bytes)."""
    from typing import TypeVar

    from anthropic._decoders.jsonl import JSONLDecoder

    T = TypeVar("T")

    class RawLines(JSONLDecoder[T]):
        def __decode__(self) -> Iterator[Any]:
            buf = b""
            for chunk in self.http_response.iter_bytes():  # as the bytes arrive
                buf += chunk
                lines = buf.split(b"\n")
                buf = lines.pop()
                for line in lines:
                    if line.strip():
                        yield line
            if buf.strip():
                yield buf

    return RawLines[bytes]  # the SDK reads the type argument


class StreamedBody:
    """A create body produced piece by piece; iterable more than once."""

    def __init__(self, make: Callable[[], Iterable[bytes]], size: int):
        self.make = make
        self.size = size

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.make())


def create(client: anthropic.Anthropic, body: StreamedBody) -> MessageBatch:
    """POST a batch whose body is streamed (never held whole in memory).

    Never retried by the SDK: a create carries no idempotency key, so a retry after a lost
    answer makes a second batch. Batchline reconciles instead (pipeline/create.py).
    """
    from anthropic.types.messages import MessageBatch

    with translated(client, "create", create=True):
        return client.post(
            BATCHES_PATH,
            cast_to=MessageBatch,
            content=body,
            options={
                "headers": {"content-type": "application/json", "content-length": str(body.size)},
                "max_retries": 0,
            },
        )


def retrieve(client: anthropic.Anthropic, batch_id: str) -> MessageBatch:
    with translated(client, "retrieve"):
        return client.messages.batches.retrieve(batch_id)


def cancel(client: anthropic.Anthropic, batch_id: str) -> MessageBatch:
    with translated(client, "cancel"):
        return client.messages.batches.cancel(batch_id)


def list_page(
    client: anthropic.Anthropic, *, limit: int = 1000, after_id: str | None = None
) -> tuple[list[MessageBatch], str | None]:
    """One page of batches, newest first, and the cursor for the next page (None at the end)."""
    data, nxt, _ = list_page_dated(client, limit=limit, after_id=after_id)
    return data, nxt


def list_page_dated(
    client: anthropic.Anthropic, *, limit: int = 1000, after_id: str | None = None
) -> tuple[list[MessageBatch], str | None, float | None]:
    """One page of batches, the next cursor, and the API's clock from the answer's Date
    header (whole seconds; None when absent)."""
    import anthropic

    with translated(client, "list"):
        raw = client.messages.batches.with_raw_response.list(
            limit=limit, after_id=after_id or anthropic.omit
        )
        page = raw.parse()
        data = list(page.data)
        nxt = page.last_id if page.has_more and data else None
        return data, nxt, _date(raw.headers.get("date"))


def _date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def results_path(batch_id: str, results_url: str | None = None) -> str:
    """Where to read a batch's results through the client's own base URL.

    The API answers an absolute results_url (https://api.anthropic.com/...); a deployment that
    goes through a gateway or proxy sets ANTHROPIC_BASE_URL, so only the path is kept and
    joined to the base URL, whatever host the URL names.
    """
    if results_url:
        parts = urllib.parse.urlsplit(results_url)
        path = parts.path or f"{BATCHES_PATH}/{batch_id}/results"
        return f"{path}?{parts.query}" if parts.query else path
    return f"{BATCHES_PATH}/{batch_id}/results"


def results_lines(client: anthropic.Anthropic, path: str) -> Iterator[bytes]:
    """A batch's result lines as raw bytes, from a path under the client's base URL (see
    results_path); errors while streaming are translated too."""
    with translated(client, "results"):
        decoder = client.get(
            path,
            cast_to=_raw_lines(),
            stream=True,
            options={"headers": {"accept": "application/binary"}},
        )
    try:
        with translated(client, "results"):
            yield from decoder
    finally:
        decoder.close()


def batch_times(batch: MessageBatch) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in ("created_at", "expires_at", "ended_at"):
        value: datetime | None = getattr(batch, name, None)
        if value is not None:
            out[name] = value.timestamp()
    return out
