"""How fast the emulator takes a full-size create and streams its results, through the SDK.

Times the SDK building and sending one create of N requests (about 1 KB each) to a null
server that only reads the body, then to `batchline emulator`; the emulator should need
less than twice as long. Then times streaming that batch's results through the SDK and
reports the emulator's peak resident memory.

    .venv/bin/python -m bench.emulator_speed [--requests 100000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import orjson
import psutil

from batchline.devstack import BIN, free_port

DEFAULT_REQUESTS = 100_000
PROMPT_BYTES = 1000
TARGET_RATIO = 2.0
API_KEY = "sk-bench-batchline"
# Long enough that the create answers before the batch ends; short enough not to wait long.
PROCESSING_SECONDS = 1.0

_CANNED_BATCH = {
    "id": "msgbatch_01NullServerCannedAnswer0",
    "type": "message_batch",
    "processing_status": "in_progress",
    "request_counts": {"processing": 1, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
    "ended_at": None,
    "created_at": "2026-01-01T00:00:00.000000Z",
    "expires_at": "2026-01-02T00:00:00.000000Z",
    "archived_at": None,
    "cancel_initiated_at": None,
    "results_url": None,
}


def build_requests(count: int) -> list[dict[str, Any]]:
    filler = ("lorem ipsum dolor sit amet " * (PROMPT_BYTES // 20))[:PROMPT_BYTES]
    return [
        {
            "custom_id": f"bench-{index:07d}",
            "params": {
                "model": "claude-sonnet-4-5",
                "max_tokens": 256,
                "messages": [{"role": "user", "content": f"{index} {filler}"}],
            },
        }
        for index in range(count)
    ]


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"no answer from {url} after {timeout_s}s")


@contextmanager
def _server(cmd: list[str], probe_path: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}{probe_path}", proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _client(port: int) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"http://127.0.0.1:{port}",
        api_key=API_KEY,
        max_retries=0,
        timeout=600,
        _strict_response_validation=True,
    )


def _timed_create(port: int, requests: list[dict[str, Any]]) -> tuple[float, str]:
    with _client(port) as client:
        started = time.perf_counter()
        batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        return time.perf_counter() - started, batch.id


def _peak_rss_bytes(pid: int) -> int:
    """The process's high-water mark of resident memory (Linux), else its current RSS."""
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return int(psutil.Process(pid).memory_info().rss)


def run(requests: int = DEFAULT_REQUESTS) -> dict[str, Any]:
    """Measure once; return the times in seconds, their ratio and the emulator's peak RSS."""
    payload = build_requests(requests)
    body_bytes = len(orjson.dumps({"requests": payload}))

    null_port = free_port()
    null_cmd = [sys.executable, str(Path(__file__).resolve()), "--null-server", str(null_port)]
    with _server(null_cmd, "/ready", null_port):
        null_create_s, _ = _timed_create(null_port, payload)

    emu_port = free_port()
    emu_cmd = [
        str(BIN / "batchline"), "emulator", "--host", "127.0.0.1", "--port", str(emu_port),
        "--processing-seconds", str(PROCESSING_SECONDS),
    ]  # fmt: skip
    with _server(emu_cmd, "/_emulator/stats", emu_port) as proc:
        emulator_create_s, batch_id = _timed_create(emu_port, payload)
        del payload
        with _client(emu_port) as client:
            while client.messages.batches.retrieve(batch_id).processing_status != "ended":
                time.sleep(0.1)
            started = time.perf_counter()
            lines = sum(1 for _ in client.messages.batches.results(batch_id))
            results_s = time.perf_counter() - started
        peak_rss = _peak_rss_bytes(proc.pid)

    return {
        "requests": requests,
        "body_bytes": body_bytes,
        "null_server_create_s": round(null_create_s, 3),
        "emulator_create_s": round(emulator_create_s, 3),
        "ratio": round(emulator_create_s / null_create_s, 3),
        "target_ratio": TARGET_RATIO,
        "results_lines": lines,
        "results_stream_s": round(results_s, 3),
        "emulator_peak_rss_bytes": peak_rss,
    }


def serve_null(port: int) -> None:
    """A server that reads any body whole and answers with one canned, valid MessageBatch."""
    from aiohttp import web

    canned = orjson.dumps(_CANNED_BATCH)

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=canned, content_type="application/json")

    app = web.Application(client_max_size=1 << 40)
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    parser.add_argument("--null-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.null_server:
        serve_null(args.null_server)
        return
    numbers = run(args.requests)
    mb = numbers["body_bytes"] / 1e6
    print(f"create of {numbers['requests']} requests ({mb:.1f} MB) through the SDK:")
    print(f"  null server  {numbers['null_server_create_s']:8.3f} s")
    print(f"  emulator     {numbers['emulator_create_s']:8.3f} s")
    verdict = "ok" if numbers["ratio"] < TARGET_RATIO else "OVER TARGET"
    print(f"  ratio        {numbers['ratio']:8.3f}   (target < {TARGET_RATIO}: {verdict})")
    print(
        f"results: {numbers['results_lines']} lines streamed in {numbers['results_stream_s']:.3f} s"
    )
    print(f"emulator peak RSS: {numbers['emulator_peak_rss_bytes'] / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
