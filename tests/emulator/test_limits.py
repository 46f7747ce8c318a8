"""What a create is refused for (400, 413, 429) and what only errors one request."""

from __future__ import annotations

import http.client
from typing import Any

import anthropic
import orjson
import pytest

from tests.emulator.conftest import admin, raw_http, req, results_by_id, wait_ended
from tests.support.procs import API_KEY, Emulator


def _bad_request(client: anthropic.Anthropic, requests: list[Any]) -> str:
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.batches.create(requests=requests)
    assert info.value.status_code == 400
    assert info.value.body["error"]["type"] == "invalid_request_error"
    return str(info.value.body["error"]["message"])


def test_empty_request_list_is_refused(client, emu) -> None:
    assert "requests" in _bad_request(client, [])
    assert emu.stats()["batches_created"] == 0


@pytest.mark.parametrize("custom_id", ["has space", "", "x" * 65, "dot.ted", "ünï"])
def test_malformed_custom_id_is_refused_by_name(client, emu, custom_id: str) -> None:
    message = _bad_request(client, [req("fine"), req(custom_id)])
    assert repr(custom_id) in message
    assert emu.stats()["batches_created"] == 0


def test_longest_custom_id_is_accepted(client, emu) -> None:
    batch = client.messages.batches.create(requests=[req("A-z_0" * 12 + "abcd")])
    assert batch.request_counts.processing == 1


def test_duplicate_custom_id_is_refused_by_name(client, emu) -> None:
    message = _bad_request(client, [req("same"), req("other"), req("same")])
    assert "'same'" in message and "duplicate" in message
    assert emu.stats()["batches_created"] == 0


def test_request_without_params_is_refused(client, emu) -> None:
    _bad_request(client, [{"custom_id": "a"}])


def test_more_requests_than_the_limit_is_413(client, emu) -> None:
    # Given a batch limit lowered to 5 requests (the default is the API's 100,000)
    admin(emu, "POST", "config", {"max_requests": 5})
    # When 6 are sent, the SDK raises its 413 error, with the API's error type
    with pytest.raises(anthropic.ContentTooLargeError) as info:
        client.messages.batches.create(requests=[req(f"r{i}") for i in range(6)])
    assert info.value.status_code == 413
    assert info.value.body["error"]["type"] == "request_too_large"
    # And exactly 5 are accepted
    batch = client.messages.batches.create(requests=[req(f"r{i}") for i in range(5)])
    assert batch.request_counts.processing == 5
    assert emu.stats()["batches_created"] == 1


def test_body_over_the_byte_limit_is_413(client, emu) -> None:
    admin(emu, "POST", "config", {"max_body_bytes": 2000})
    with pytest.raises(anthropic.ContentTooLargeError) as info:
        client.messages.batches.create(requests=[req(f"r{i}", "x" * 100) for i in range(20)])
    assert info.value.body["error"]["type"] == "request_too_large"
    batch = client.messages.batches.create(requests=[req("small")])
    assert batch.request_counts.processing == 1


def test_chunked_body_over_the_byte_limit_is_413(emu: Emulator) -> None:
    # Given a body sent without a content-length, in chunks, past the limit
    admin(emu, "POST", "config", {"max_body_bytes": 5000})
    body = orjson.dumps({"requests": [req(f"r{i}", "y" * 200) for i in range(40)]})
    connection = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    chunks = (body[i : i + 1000] for i in range(0, len(body), 1000))
    connection.request(
        "POST",
        "/v1/messages/batches",
        body=chunks,
        headers={"x-api-key": API_KEY, "content-type": "application/json"},
        encode_chunked=True,
    )
    response = connection.getresponse()
    # Then the emulator answers 413 itself, in the error envelope
    assert response.status == 413
    assert orjson.loads(response.read())["error"]["type"] == "request_too_large"
    connection.close()
    assert emu.stats()["batches_created"] == 0


def test_default_limits_are_the_apis(emu: Emulator) -> None:
    config = admin(emu, "GET", "config")
    assert config["max_requests"] == 100_000
    assert config["max_body_bytes"] == 256_000_000


def test_invalid_json_body_is_a_bad_request(emu: Emulator) -> None:
    response = raw_http(
        emu, "POST", "/v1/messages/batches", b"{not json", headers={"x-api-key": API_KEY}
    )
    assert response.status == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_queue_limit_refuses_a_create_that_would_overflow_it(client, emu) -> None:
    # Given a queue of at most 10 requests, 6 of them taken by a batch in progress
    admin(emu, "POST", "config", {"queue_limit": 10, "processing_seconds": 0.5})
    first = client.messages.batches.create(requests=[req(f"a{i}") for i in range(6)])
    # When 5 more are sent, the create is refused with a rate-limit error and retry-after
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.batches.create(requests=[req(f"b{i}") for i in range(5)])
    assert info.value.body["error"]["type"] == "rate_limit_error"
    assert int(info.value.response.headers["retry-after"]) >= 1
    # But 4 fit
    client.messages.batches.create(requests=[req(f"c{i}") for i in range(4)])
    # And once the queue has drained, the 5 are accepted
    wait_ended(client, first.id)
    client.messages.batches.create(requests=[req(f"d{i}") for i in range(5)])
    stats = emu.stats()
    assert stats["queue_limited"] == 1 and stats["rate_limited"] == 1
    assert stats["batches_created"] == 3
    assert stats["requests_received"] == 6 + 4 + 5


@pytest.mark.parametrize(
    ("custom_id", "params", "named"),
    [
        ("no_model", {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ("no_messages", {"model": "m", "max_tokens": 5}, "messages"),
        ("no_max_tokens", {"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max"),
        (
            "zero_max_tokens",
            {"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]},
            "max_tokens",
        ),
        (
            "streamed",
            {
                "model": "m",
                "max_tokens": 5,
                "stream": True,
                "messages": [{"role": "user", "content": "x"}],
            },
            "stream",
        ),
    ],
)
def test_bad_params_error_one_request_not_the_create(
    client, emu, custom_id: str, params: dict[str, Any], named: str
) -> None:
    # Given a batch where one request's params are invalid
    batch = client.messages.batches.create(
        requests=[{"custom_id": custom_id, "params": params}, req("good")]
    )
    # Then the create succeeds, and that request alone errors with invalid_request_error
    ended = wait_ended(client, batch.id)
    assert ended.request_counts.errored == 1 and ended.request_counts.succeeded == 1
    results = results_by_id(client, batch.id)
    error = results[custom_id].error
    assert error.type == "error"
    assert error.error.type == "invalid_request_error"
    assert named in error.error.message
    assert error.request_id.startswith("req_")
    assert results["good"].type == "succeeded"
