"""One webhook POST over http.client to an already checked address: no redirects, a deadline."""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from batchline.webhooks.errors import DeliveryFailed
from batchline.webhooks.urls import Target

USER_AGENT = "Batchline-Webhooks/1"
EXCERPT_BYTES = 200  # of the response body, kept in the delivery log
READ_BLOCK = 16 * 1024


@dataclass(frozen=True)
class Response:
    """What came back: status, Retry-After (seconds) and the start of the body."""

    status: int
    retry_after_s: float | None
    excerpt: str
    elapsed_ms: int
    address: str


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the checked address; the Host header still names the URL's host."""

    def __init__(self, target: Target, address: str, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """TLS to the checked address, with SNI and the certificate checked for the URL's host."""

    def __init__(self, target: Target, address: str, timeout: float):
        super().__init__(
            target.host, target.port, timeout=timeout, context=ssl.create_default_context()
        )
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _connection(target: Target, address: str, timeout: float) -> http.client.HTTPConnection:
    cls = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
    return cls(target, address, timeout)


def _abort(conn: http.client.HTTPConnection) -> None:
    """The deadline passed: unblock whatever read or write is waiting on the socket."""
    sock: Any = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def post(
    target: Target,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout_s: float,
    max_response_bytes: int,
) -> Response:
    """POST body to the target within timeout_s in all; DeliveryFailed if no answer came.

    Redirects are answers like any other (a 3xx is not a success) and are never followed.
    At most max_response_bytes of the answer are read.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    last: Exception | None = None
    for address in target.addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        conn = _connection(target, address, remaining)
        watchdog = threading.Timer(remaining, _abort, args=(conn,))
        watchdog.daemon = True
        watchdog.start()
        try:
            try:
                conn.connect()
            except OSError as exc:  # refused or unreachable: the next checked address
                last = exc
                continue
            conn.putrequest("POST", target.path, skip_accept_encoding=True)
            for name, value in {
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                "content-length": str(len(body)),
                "connection": "close",
                **headers,
            }.items():
                conn.putheader(name, value)
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read(max_response_bytes) if max_response_bytes else b""
            return Response(
                status=resp.status,
                retry_after_s=parse_retry_after(resp.getheader("retry-after")),
                excerpt=data[:EXCERPT_BYTES].decode("utf-8", "replace"),
                elapsed_ms=int((time.monotonic() - started) * 1000),
                address=address,
            )
        except (OSError, http.client.HTTPException) as exc:
            if time.monotonic() >= deadline:
                raise DeliveryFailed(f"no answer within {timeout_s:g} s") from None
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        finally:
            watchdog.cancel()
            conn.close()
    if last is None:
        raise DeliveryFailed(f"no answer within {timeout_s:g} s")
    raise DeliveryFailed(f"cannot connect: {last}")
