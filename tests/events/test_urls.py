"""URL safety: which addresses a webhook may reach, and that the checked one is used."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from batchline.errors import JobRefused
from batchline.settings import Settings
from batchline.webhooks.endpoints import check_job_webhook
from batchline.webhooks.errors import DeliveryFailed, UnsafeUrl
from batchline.webhooks.sender import parse_retry_after, post
from batchline.webhooks.urls import Policy, Target, display, parse, refusal, resolve

from .test_signing import SECRET

DEFAULT = Policy()
LOOPBACK = Policy(allow_loopback=True)
PRIVATE = Policy(allow_private=True)
BOTH = Policy(allow_loopback=True, allow_private=True)
METADATA = "cloud metadata"


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),  # shared address space (carrier NAT)
        ("fc00::1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1%eth0", "link-local"),
        ("224.0.0.1", "multicast"),  # is_global is True for this one
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        # IPv6 forms carrying an IPv4 address are judged by that address
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::7f00:1", "loopback"),  # NAT64: is_global is True
        ("64:ff9b::a00:1", "private"),
        ("2002:7f00:1::1", "loopback"),  # 6to4: is_global is True
        ("::127.0.0.1", "loopback"),  # IPv4-compatible: is_global is True
        ("64:ff9b:1::a00:1", "reserved"),  # local-use NAT64
    ],
)
def test_non_public_addresses_are_refused_by_default(address: str, kind: str) -> None:
    assert refusal(address, DEFAULT) == kind


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(address, DEFAULT) is None


def test_loopback_and_private_need_their_own_setting() -> None:
    assert refusal("127.0.0.1", LOOPBACK) is None
    assert refusal("::ffff:127.0.0.1", LOOPBACK) is None
    assert refusal("10.0.0.1", LOOPBACK) == "private"
    assert refusal("10.0.0.1", PRIVATE) is None
    assert refusal("127.0.0.1", PRIVATE) == "loopback"
    # Never allowed: link-local (metadata services), multicast, reserved, unspecified
    both = Policy(allow_loopback=True, allow_private=True)
    for address in ("169.254.169.254", "224.0.0.1", "240.0.0.1", "0.0.0.0"):
        assert refusal(address, both) is not None


@pytest.mark.parametrize(
    "address",
    [
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS EKS Pod Identity agent over IPv6
        "FD00:EC2:0::254",  # another spelling of the same
        "fd20:ce::254",  # GCP, IPv6-only VMs
        "168.63.129.16",  # Azure WireServer (a public address)
        "100.100.100.200",  # Alibaba Cloud (shared address space)
        "192.0.0.192",  # Oracle Cloud (Classic)
        "fd00:c1::a9fe:a9fe",  # Oracle Cloud over IPv6
        "fd00:a9fe:a9fe::1",  # Akamai (Linode) over IPv6
        "fd00:42::42",  # Scaleway over IPv6
        # IPv6 forms carrying a metadata IPv4 address
        "::ffff:100.100.100.200",  # IPv4-mapped
        "::ffff:168.63.129.16",
        "64:ff9b::6464:64c8",  # NAT64 of 100.100.100.200
        "64:ff9b::a83f:8110",  # NAT64 of 168.63.129.16
        "64:ff9b::c000:c0",  # NAT64 of 192.0.0.192
        "2002:6464:64c8::1",  # 6to4 of 100.100.100.200
        "2002:a83f:8110::1",  # 6to4 of 168.63.129.16
        "2001:0:4136:e378:8000:63bf:9b9b:9b37",  # Teredo, client 100.100.100.200
        "::100.100.100.200",  # IPv4-compatible
    ],
)
def test_cloud_metadata_is_refused_whatever_the_policy(address: str) -> None:
    for policy in (DEFAULT, LOOPBACK, PRIVATE, BOTH):
        assert refusal(address, policy) == METADATA, policy


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",  # AWS, GCP, Azure, Oracle, DigitalOcean, Hetzner, OpenStack...
        "169.254.170.2",  # AWS ECS task credentials
        "169.254.170.23",  # AWS EKS Pod Identity agent
        "169.254.0.23",  # Tencent Cloud
        "169.254.42.42",  # Scaleway
        "fe80::a9fe:a9fe",  # OpenStack over IPv6
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
    ],
)
def test_link_local_metadata_stays_refused_as_link_local(address: str) -> None:
    for policy in (DEFAULT, BOTH):
        assert refusal(address, policy) == "link-local", policy


def test_neighbours_of_metadata_addresses_keep_their_own_kind() -> None:
    # The list names single services, not their neighbourhoods
    assert refusal("168.63.129.17", BOTH) is None  # public
    assert refusal("100.100.100.201", PRIVATE) is None  # shared address space
    assert refusal("fd20:ce::253", PRIVATE) is None  # unique local
    assert refusal("fd00:ec3::254", PRIVATE) is None


@pytest.mark.parametrize("address", ["fec0::", "fec0::1", "feff:ffff::1"])
def test_deprecated_site_local_is_private(address: str) -> None:
    assert refusal(address, DEFAULT) == "private"
    assert refusal(address, LOOPBACK) == "private"
    assert refusal(address, PRIVATE) is None


def test_a_host_is_refused_when_any_of_its_addresses_is(monkeypatch: Any) -> None:
    # Given a name that resolves to a public and a private address
    def fake(host: str, port: int, *a: Any, **kw: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(UnsafeUrl, match=r"10\.0\.0\.7"):
        resolve("https://hooks.example.com/in", DEFAULT)
    assert resolve("https://hooks.example.com/in", PRIVATE).addresses == (
        "93.184.215.14",
        "10.0.0.7",
    )


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "http:///nohost",
        "https://user:pw@example.com/",
        "https://example.com:99999/",
        "https://exa mple.com/",
        "https://example.com/\r\nX: y",
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        parse(url)


def test_display_hides_credentials_and_query() -> None:
    assert display("https://h.example.com:8443/p?token=abc") == "https://h.example.com:8443/p?..."
    assert "pw" not in display("https://u:pw@h.example.com/")


def test_a_job_webhook_is_checked_at_registration() -> None:
    secret = {"webhook_secret": SECRET}
    for url in (
        "http://10.0.0.1/hook",
        "http://127.0.0.1:9/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[64:ff9b::7f00:1]/hook",
        "http://169.254.169.254/latest",
        "gopher://example.com/",
    ):
        with pytest.raises(JobRefused, match="webhook_url refused"):
            check_job_webhook(url, Settings(**secret))
    check_job_webhook("http://127.0.0.1:9/hook", Settings(webhook_allow_loopback=True, **secret))
    check_job_webhook("http://10.0.0.1/hook", Settings(webhook_allow_private=True, **secret))
    # Cloud metadata stays refused with both settings on
    both = Settings(webhook_allow_loopback=True, webhook_allow_private=True, webhook_secret=SECRET)
    for url in ("http://[fd00:ec2::254]/latest", "http://100.100.100.200/latest"):
        with pytest.raises(JobRefused, match="cloud metadata"):
            check_job_webhook(url, both)
    with pytest.raises(JobRefused, match="BATCHLINE_WEBHOOK_SECRET"):
        check_job_webhook("http://127.0.0.1:9/hook", Settings(webhook_allow_loopback=True))


class _Echo(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.seen.append((self.headers["host"], body))  # type: ignore[attr-defined]
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("location", "http://127.0.0.1:1/elsewhere")
            self.send_header("content-length", "0")
            self.end_headers()
            return
        if self.path == "/big":
            self.send_response(200)
            self.send_header("content-length", str(10_000_000))
            self.end_headers()
            self.wfile.write(b"x" * 1_000_000)
            return
        if self.path == "/slow":
            threading.Event().wait(3)
        self.send_response(429 if self.path == "/busy" else 204)
        self.send_header("retry-after", "7")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.seen = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def _target(server: ThreadingHTTPServer, path: str, host: str = "hooks.test") -> Target:
    port = server.server_address[1]
    return Target("http", host, int(port), path, ("127.0.0.1",))


def test_the_connection_goes_to_the_checked_address_with_the_urls_host(
    echo: ThreadingHTTPServer,
) -> None:
    # Given a target whose host does not resolve at all, pinned to the checked address
    resp = post(_target(echo, "/in"), b"{}", {}, timeout_s=5, max_response_bytes=1024)
    # Then the request reached that address, with the URL's host in the Host header
    assert resp.status == 204 and resp.address == "127.0.0.1"
    assert echo.seen[0][0] == f"hooks.test:{echo.server_address[1]}"  # type: ignore[attr-defined]


def test_redirects_are_not_followed_and_retry_after_is_read(echo: ThreadingHTTPServer) -> None:
    moved = post(_target(echo, "/redirect"), b"{}", {}, timeout_s=5, max_response_bytes=10)
    assert moved.status == 302
    busy = post(_target(echo, "/busy"), b"{}", {}, timeout_s=5, max_response_bytes=10)
    assert (busy.status, busy.retry_after_s) == (429, 7.0)
    assert len(echo.seen) == 2  # type: ignore[attr-defined]


def test_a_slow_receiver_hits_the_timeout_and_a_big_answer_is_cut(
    echo: ThreadingHTTPServer,
) -> None:
    with pytest.raises(DeliveryFailed, match=r"no answer within 0\.5 s"):
        post(_target(echo, "/slow"), b"{}", {}, timeout_s=0.5, max_response_bytes=10)
    big = post(_target(echo, "/big"), b"{}", {}, timeout_s=5, max_response_bytes=100)
    assert big.status == 200 and len(big.excerpt) == 100


def test_retry_after_forms() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 60) == 60.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
