"""Authentication in both header styles, beta markers, and the anthropic-version rules."""

from __future__ import annotations

import anthropic
import pytest

from tests.emulator.conftest import raw_http, req, results_by_id, sdk, wait_ended
from tests.support.procs import API_KEY


def test_sdk_sends_bearer_auth_and_is_accepted(client, emu) -> None:
    raw = client.messages.batches.with_raw_response.list()
    assert raw.http_request.headers["authorization"] == f"Bearer {API_KEY}"
    assert "x-api-key" not in raw.http_request.headers
    assert raw.status_code == 200


def test_x_api_key_header_is_accepted_raw_and_through_the_sdk(emu) -> None:
    response = raw_http(
        emu,
        "POST",
        "/v1/messages/batches",
        {"requests": [req("a")]},
        headers={"x-api-key": API_KEY, "content-type": "application/json"},
    )
    assert response.status == 200
    assert response.json()["type"] == "message_batch"
    # The SDK's own Authorization header is left out, so only x-api-key is sent
    headers = {"x-api-key": API_KEY, "Authorization": anthropic.Omit()}
    with sdk(emu, default_headers=headers) as c:
        raw = c.messages.batches.with_raw_response.list()
        assert raw.http_request.headers["x-api-key"] == API_KEY
        assert "authorization" not in raw.http_request.headers
        assert raw.parse().data[0].id == response.json()["id"]


def test_missing_key_gets_401_in_the_error_envelope(emu) -> None:
    response = raw_http(emu, "GET", "/v1/messages/batches")
    assert response.status == 401
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert body["request_id"] == response.headers["request-id"]
    assert response.headers["content-type"] == "application/json"


def test_configured_keys_only(emulator_factory) -> None:
    # Given an emulator that accepts exactly two keys
    emu = emulator_factory("--api-keys", "key-one,key-two")
    # Then an unknown key is refused with AuthenticationError
    with sdk(emu, api_key="key-three") as client, pytest.raises(anthropic.AuthenticationError):
        client.messages.batches.list()
    # And each configured key works, in either header style
    with sdk(emu, api_key="key-two") as client:
        assert client.messages.batches.list().data == []
    response = raw_http(emu, "GET", "/v1/messages/batches", headers={"x-api-key": "key-one"})
    assert response.status == 200
    response = raw_http(emu, "GET", "/v1/messages/batches", headers={"x-api-key": "nope"})
    assert response.status == 401
    # And a refused call creates nothing
    with sdk(emu, api_key="key-three") as client, pytest.raises(anthropic.AuthenticationError):
        client.messages.batches.create(requests=[req("a")])
    assert emu.stats()["batches_created"] == 0


def test_beta_header_and_beta_query_are_tolerated(emu) -> None:
    with sdk(
        emu,
        default_headers={"anthropic-beta": "message-batches-2024-09-24"},
        default_query={"beta": "true"},
    ) as client:
        raw = client.messages.batches.with_raw_response.create(requests=[req("a")])
        assert raw.http_request.url.params["beta"] == "true"
        assert raw.http_request.headers["anthropic-beta"] == "message-batches-2024-09-24"
        batch = raw.parse()
        assert client.messages.batches.retrieve(batch.id).id == batch.id
        assert [b.id for b in client.messages.batches.list()] == [batch.id]
        assert results_by_id(client, wait_ended(client, batch.id).id)["a"].type == "succeeded"
        assert client.messages.batches.delete(batch.id).id == batch.id


def test_sampling_params_follow_the_anthropic_version(emu) -> None:
    requests = [
        req("temperature", temperature=0.2),
        req("top_p", top_p=0.9),
        req("top_k", top_k=5),
        req("plain"),
    ]
    # Under the SDK's own version (2026-10-21) sampling parameters error per request
    with sdk(emu) as client:
        assert client.default_headers["anthropic-version"] == "2026-10-21"
        batch = client.messages.batches.create(requests=requests)
        results = results_by_id(client, wait_ended(client, batch.id).id)
    for name in ("temperature", "top_p", "top_k"):
        assert results[name].type == "errored"
        assert results[name].error.error.type == "invalid_request_error"
        assert name in results[name].error.error.message
    assert results["plain"].type == "succeeded"
    # Under an older version they are accepted
    with sdk(emu, default_headers={"anthropic-version": "2023-06-01"}) as client:
        batch = client.messages.batches.create(requests=requests)
        results = results_by_id(client, wait_ended(client, batch.id).id)
    assert {result.type for result in results.values()} == {"succeeded"}
