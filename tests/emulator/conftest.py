"""Fixtures for the emulator's tests: one shared emulator process, reset between tests."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest

from tests.support.procs import API_KEY, Emulator, wait_for

MODEL = "claude-sonnet-4-5"


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def raw_http(
    emu: Emulator,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> RawResponse:
    """One HTTP call without the SDK; error statuses are returned, not raised."""
    data = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
    request = urllib.request.Request(
        emu.base_url + path, data=data, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return RawResponse(response.status, _lower(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return RawResponse(exc.code, _lower(exc.headers), exc.read())


def _lower(headers: Any) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def sdk(emu: Emulator, **kwargs: Any) -> anthropic.Anthropic:
    """The official client, validating every response strictly; no retries unless asked."""
    kwargs.setdefault("api_key", API_KEY)
    kwargs.setdefault("max_retries", 0)
    return anthropic.Anthropic(base_url=emu.base_url, _strict_response_validation=True, **kwargs)


def async_sdk(emu: Emulator, **kwargs: Any) -> anthropic.AsyncAnthropic:
    kwargs.setdefault("api_key", API_KEY)
    kwargs.setdefault("max_retries", 0)
    return anthropic.AsyncAnthropic(
        base_url=emu.base_url, _strict_response_validation=True, **kwargs
    )


def req(custom_id: str, text: str = "hello", **params: Any) -> Any:
    """One batch request whose last user message is `text`."""
    return {
        "custom_id": custom_id,
        "params": {
            "model": MODEL,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": text}],
            **params,
        },
    }


def wait_ended(client: anthropic.Anthropic, batch_id: str, timeout: float = 15) -> Any:
    def ended() -> Any:
        batch = client.messages.batches.retrieve(batch_id)
        return batch if batch.processing_status == "ended" else None

    return wait_for(
        ended,
        timeout,
        interval=0.05,
        what=f"batch {batch_id} to end",
    )


def results_by_id(client: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    return {line.custom_id: line.result for line in client.messages.batches.results(batch_id)}


def admin(emu: Emulator, method: str, path: str, body: Any = None) -> Any:
    response = raw_http(emu, method, "/_emulator/" + path, body)
    assert response.status == 200, response.body
    return response.json()


@pytest.fixture(scope="session")
def shared_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    workdir: Path = tmp_path_factory.mktemp("shared-emulator")
    emu = Emulator(workdir, "--processing-seconds", "0.3", "--canceling-seconds", "0.1").start()
    yield emu
    emu.stop()


@pytest.fixture
def emu(shared_emulator: Emulator) -> Iterator[Emulator]:
    """The shared emulator, empty, with its start-up config restored after the test."""
    baseline = admin(shared_emulator, "GET", "config")
    admin(shared_emulator, "POST", "reset")
    yield shared_emulator
    admin(shared_emulator, "POST", "config", baseline)
    admin(shared_emulator, "POST", "reset")


@pytest.fixture
def client(emu: Emulator) -> Iterator[anthropic.Anthropic]:
    with sdk(emu) as c:
        yield c
