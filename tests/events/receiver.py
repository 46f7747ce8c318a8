"""A real webhook receiver on 127.0.0.1 (threads) that verifies like a service would."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class Call:
    """One request as the receiver saw it, and what it answered."""

    path: str
    webhook_id: str
    timestamp: str
    body: bytes
    verified: bool
    event: dict[str, Any] | None
    at: float
    status: int = 0


# (call, how many calls with this webhook-id so far, this one included) -> answer
Policy = Callable[[Call, int], tuple[int, dict[str, str]]]


def always_ok(call: Call, n: int) -> tuple[int, dict[str, str]]:
    return 200, {}


@dataclass
class Receiver:
    """Paths with their own secret and answer policy; every call is kept."""

    secrets: dict[str, str] = field(default_factory=dict)
    policies: dict[str, Policy] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def url(self, path: str) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        body = req.rfile.read(int(req.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in req.headers.items()}
        secret = self.secrets[req.path]
        try:
            event = Webhook(secret).verify(body, headers)
            verified = True
        except (WebhookVerificationError, ValueError):
            # ValueError too: the package raises it for some malformed signature headers
            event, verified = None, False
        call = Call(
            req.path,
            headers.get("webhook-id", ""),
            headers.get("webhook-timestamp", ""),
            body,
            verified,
            event,
            time.time(),
        )
        with self.lock:
            self.calls.append(call)
            n = sum(1 for c in self.calls if c.webhook_id == call.webhook_id and c.path == req.path)
        policy = self.policies.get(req.path, always_ok)
        status, extra = policy(call, n) if verified else (400, {})
        if status == 0:  # hang until released (a receiver stuck mid-request)
            self.release.wait(60)
            status = 200
        call.status = status
        reply = b'{"ok":true}'
        req.send_response(status)
        for k, v in extra.items():
            req.send_header(k, v)
        req.send_header("content-length", str(len(reply)))
        req.end_headers()
        req.wfile.write(reply)

    def at(self, path: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.path == path]

    def delivered(self, path: str) -> list[dict[str, Any]]:
        """Events answered with a 2xx, in the order they arrived."""
        return [c.event for c in self.at(path) if 200 <= c.status < 300 and c.event]

    def types(self, path: str, job_id: str) -> list[str]:
        return [e["type"] for e in self.delivered(path) if e["data"]["job_id"] == job_id]


def body_json(call: Call) -> Any:
    return orjson.loads(call.body)
