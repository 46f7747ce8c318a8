"""Injected faults as the SDK sees them: error statuses, cut connections, lost creates, 404s."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import pytest

from tests.emulator.conftest import admin, raw_http, req, sdk, wait_ended
from tests.support.procs import API_KEY

STATUS_ERRORS = [
    (400, anthropic.BadRequestError, "invalid_request_error"),
    (401, anthropic.AuthenticationError, "authentication_error"),
    (404, anthropic.NotFoundError, "not_found_error"),
    (413, anthropic.ContentTooLargeError, "request_too_large"),
    (429, anthropic.RateLimitError, "rate_limit_error"),
    (500, anthropic.InternalServerError, "api_error"),
    (529, anthropic.OverloadedError, "overloaded_error"),
]


@pytest.mark.parametrize(("status", "exception", "error_type"), STATUS_ERRORS)
def test_fail_next_status_reaches_the_sdk_as_its_exception(
    client, emu, status: int, exception: type[anthropic.APIStatusError], error_type: str
) -> None:
    # Given one injected status for the next list call
    admin(emu, "POST", "config", {"fail_next": [{"endpoint": "list", "status": status}]})
    # Then the SDK raises its class for that status, with the API's envelope
    with pytest.raises(exception) as info:
        client.messages.batches.list()
    assert info.value.status_code == status
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == error_type
    assert info.value.response.headers["request-id"].startswith("req_")
    # And the fault is spent: the next call succeeds
    assert client.messages.batches.list().data == []
    stats = emu.stats()
    assert stats["faults_injected"] == 1
    assert stats["responses_by_status"] == {str(status): 1, "200": 1}


def test_injected_429_carries_retry_after_and_the_sdk_retries_it(emu) -> None:
    fault = {"endpoint": "create", "status": 429, "retry_after": 0}
    admin(emu, "POST", "config", {"fail_next": [fault]})
    with sdk(emu, max_retries=1) as client:
        raw = client.messages.batches.with_raw_response.create(requests=[req("a")])
    assert raw.retries_taken == 1
    assert emu.stats()["batches_created"] == 1
    admin(emu, "POST", "config", {"fail_next": [{"endpoint": "create", "status": 429}]})
    with sdk(emu) as client, pytest.raises(anthropic.RateLimitError) as info:
        client.messages.batches.create(requests=[req("a")])
    assert info.value.response.headers["retry-after"] == "1"


def test_fail_next_matches_endpoints_and_is_consumed_in_order(client, emu) -> None:
    # Given faults queued for create, retrieve and then any endpoint
    faults = [
        {"endpoint": "create", "status": 500},
        {"endpoint": "retrieve", "status": 529},
        {"endpoint": "any", "status": 500},
        {"endpoint": "create", "status": 529},
    ]
    config = admin(emu, "POST", "config", {"fail_next": faults})
    assert config["fail_next"] == faults
    # When the calls come in another order, each takes the first fault that matches it
    with pytest.raises(anthropic.OverloadedError):
        client.messages.batches.retrieve("msgbatch_01anything")
    with pytest.raises(anthropic.InternalServerError):
        client.messages.batches.create(requests=[req("a")])
    with pytest.raises(anthropic.InternalServerError):  # "any"
        client.messages.batches.list()
    with pytest.raises(anthropic.OverloadedError):
        client.messages.batches.create(requests=[req("a")])
    # Then nothing is left, and no failed create made a batch
    assert admin(emu, "GET", "config")["fail_next"] == []
    assert client.messages.batches.list().data == []
    assert emu.stats()["batches_created"] == 0


def test_dropped_connection_is_a_connection_error_and_creates_nothing(client, emu) -> None:
    admin(emu, "POST", "config", {"fail_next": [{"endpoint": "create", "status": "drop"}]})
    with pytest.raises(anthropic.APIConnectionError) as info:
        client.messages.batches.create(requests=[req("a")])
    assert not isinstance(info.value, anthropic.APITimeoutError)
    stats = emu.stats()
    assert stats["batches_created"] == 0
    assert stats["calls"]["create"] == 1
    assert stats["responses_by_status"] == {"dropped": 1}


def test_lost_create_response_still_creates_the_batch(client, emu) -> None:
    # Given the next create's answer will be lost
    admin(emu, "POST", "config", {"lost_create_next": 1})
    # When a client without retries creates a batch, it sees a connection error
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.batches.create(requests=[req("a"), req("b")])
    # Yet the batch exists, with its requests
    stats = emu.stats()
    assert stats["batches_created"] == 1
    assert stats["requests_received"] == 2
    listed = client.messages.batches.list().data
    assert [b.id for b in listed] == [stats["batches"][0]["id"]]
    assert listed[0].request_counts.processing + listed[0].request_counts.succeeded == 2


def test_lost_answer_on_another_endpoint_still_does_the_work(client, emu) -> None:
    admin(emu, "POST", "config", {"processing_seconds": 30})
    batch = client.messages.batches.create(requests=[req("a")])
    admin(emu, "POST", "config", {"fail_next": [{"endpoint": "cancel", "status": "lost"}]})
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.batches.cancel(batch.id)
    assert client.messages.batches.retrieve(batch.id).processing_status == "canceling"


def test_lost_create_retried_by_the_sdk_creates_a_duplicate(emu) -> None:
    # The SDK retries connection errors and sends no idempotency key: two batches
    admin(emu, "POST", "config", {"lost_create_next": 1})
    with sdk(emu, max_retries=2) as client:
        batch = client.messages.batches.create(requests=[req("a"), req("b")])
    batches = emu.stats()["batches"]
    assert len(batches) == 2
    assert batches[1]["id"] == batch.id
    assert batches[0]["custom_ids_digest"] == batches[1]["custom_ids_digest"]


def test_lost_create_rate_flag(emulator_factory) -> None:
    emu = emulator_factory("--lost-create-rate", "1", "--processing-seconds", "0.1")
    with sdk(emu) as client:
        for _ in range(2):
            with pytest.raises(anthropic.APIConnectionError):
                client.messages.batches.create(requests=[req("a")])
        assert len(client.messages.batches.list().data) == 2
    stats = emu.stats()
    assert stats["batches_created"] == 2
    assert stats["faults_by_source"] == {"lost_create_rate": 2}


def test_drop_rate_flag_cuts_every_endpoint(emulator_factory) -> None:
    emu = emulator_factory("--drop-rate", "1.0")
    with sdk(emu) as client:
        with pytest.raises(anthropic.APIConnectionError):
            client.messages.batches.list()
        with pytest.raises(anthropic.APIConnectionError):
            client.messages.batches.retrieve("msgbatch_01x")
        with pytest.raises(anthropic.APIConnectionError):
            client.messages.batches.create(requests=[req("a")])
    stats = emu.stats()
    assert stats["batches_created"] == 0
    assert stats["faults_by_source"] == {"drop_rate": 3}
    assert [call["status"] for call in admin(emu, "GET", "calls")] == ["dropped"] * 3


def test_error_rate_picks_from_the_error_statuses(emulator_factory) -> None:
    emu = emulator_factory("--error-rate", "1", "--error-statuses", "529")
    with sdk(emu) as client, pytest.raises(anthropic.OverloadedError):
        client.messages.batches.list()
    admin(emu, "POST", "config", {"error_statuses": [500]})
    with sdk(emu) as client, pytest.raises(anthropic.InternalServerError):
        client.messages.batches.list()


def test_random_faults_repeat_for_the_same_seed(client, emu) -> None:
    def statuses() -> list[int]:
        return [
            raw_http(emu, "GET", "/v1/messages/batches", headers={"x-api-key": API_KEY}).status
            for _ in range(30)
        ]

    admin(emu, "POST", "config", {"error_rate": 0.5, "error_statuses": "500,529", "seed": 11})
    first = statuses()
    admin(emu, "POST", "config", {"seed": 11})
    assert statuses() == first
    assert {200, 500, 529} == set(first)
    admin(emu, "POST", "config", {"seed": 12})
    assert statuses() != first


def test_latency_makes_a_short_client_timeout_fire(emu) -> None:
    admin(emu, "POST", "config", {"latency_ms": 500})
    with sdk(emu, timeout=httpx2.Timeout(0.1)) as client, pytest.raises(anthropic.APITimeoutError):
        client.messages.batches.list()
    admin(emu, "POST", "config", {"latency_ms": 0})
    with sdk(emu, timeout=httpx2.Timeout(5)) as client:
        assert client.messages.batches.list().data == []


def test_transient_404_on_the_first_retrieve_of_each_batch(emulator_factory) -> None:
    emu = emulator_factory("--transient-404")
    with sdk(emu) as client:
        for _ in range(2):
            batch = client.messages.batches.create(requests=[req("a")])
            with pytest.raises(anthropic.NotFoundError):
                client.messages.batches.retrieve(batch.id)
            assert client.messages.batches.retrieve(batch.id).id == batch.id
            assert client.messages.batches.retrieve(batch.id).id == batch.id
    assert emu.stats()["faults_by_source"] == {"transient_404": 2}


def test_truncated_and_unknown_results_faults(emulator_factory: Any) -> None:
    emu = emulator_factory("--processing-seconds", "0")
    client = anthropic.Anthropic(base_url=emu.base_url, api_key=API_KEY, max_retries=0)
    batch = client.messages.batches.create(
        requests=[
            {
                "custom_id": f"r{i}",
                "params": {
                    "model": "m",
                    "max_tokens": 5,
                    "messages": [{"role": "user", "content": f"q{i}"}],
                },
            }
            for i in range(10)
        ]
    )
    emu.configure(unknown_results_next=1)
    ids = [r.custom_id for r in client.messages.batches.results(batch.id)]
    assert "never-submitted" in ids and len(ids) == 11
    emu.configure(truncate_results_next=1)
    seen: list[str] = []
    with pytest.raises(httpx2.TransportError):  # raised while iterating, past the SDK
        for r in client.messages.batches.results(batch.id):
            seen.append(r.custom_id)
    assert 0 < len(seen) < 10  # cut mid-stream
    assert len(list(client.messages.batches.results(batch.id))) == 10
    assert emu.stats()["faults_by_source"] == {
        "unknown_results_next": 1,
        "truncate_results_next": 1,
    }


@pytest.mark.parametrize(
    ("status", "exception", "error_type"),
    [
        (500, anthropic.InternalServerError, "api_error"),
        (504, anthropic.InternalServerError, "timeout_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_a_5xx_after_create_leaves_the_batch_made(
    client, emu, status: int, exception: type[anthropic.APIStatusError], error_type: str
) -> None:
    # Given the next create answers an error once its batch is made
    fault = {"endpoint": "create", "status": status, "after_create": True}
    assert admin(emu, "POST", "config", {"fail_next": [fault]})["fail_next"] == [fault]
    # When a client without retries creates a batch, it is told the create failed
    with pytest.raises(exception) as info:
        client.messages.batches.create(requests=[req("a"), req("b")])
    assert info.value.status_code == status
    body = info.value.body
    assert isinstance(body, dict) and body["error"]["type"] == error_type
    assert info.value.response.headers["request-id"].startswith("req_")
    # Yet the batch exists: counted, listed, and it runs to the end
    stats = emu.stats()
    assert (stats["batches_created"], stats["requests_received"]) == (1, 2)
    assert stats["faults_by_source"] == {"fail_next_after_create": 1}
    assert stats["responses_by_status"] == {str(status): 1}
    listed = client.messages.batches.list().data
    assert [batch.id for batch in listed] == [stats["batches"][0]["id"]]
    assert wait_ended(client, listed[0].id).request_counts.succeeded == 2


def test_a_5xx_after_create_retried_by_the_sdk_makes_two_batches(emu) -> None:
    fault = {"endpoint": "create", "status": 500, "after_create": True}
    admin(emu, "POST", "config", {"fail_next": [fault]})
    with sdk(emu, max_retries=1) as client:
        raw = client.messages.batches.with_raw_response.create(requests=[req("a")])
        assert raw.retries_taken == 1
        listed = [batch.id for batch in client.messages.batches.list()]
    batches = emu.stats()["batches"]
    assert listed == [raw.parse().id, batches[0]["id"]]
    assert batches[0]["custom_ids_digest"] == batches[1]["custom_ids_digest"]


def test_a_refused_create_makes_no_batch_even_with_an_after_create_fault(client, emu) -> None:
    fault = {"endpoint": "create", "status": 500, "after_create": True}
    admin(emu, "POST", "config", {"fail_next": [fault]})
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.create(requests=[req("a"), req("a")])  # duplicate custom_id
    assert emu.stats()["batches_created"] == 0


def test_after_create_needs_a_create_and_a_status(emu) -> None:
    for fault in (
        {"endpoint": "list", "status": 500, "after_create": True},
        {"endpoint": "any", "status": 500, "after_create": True},
        {"endpoint": "create", "status": "drop", "after_create": True},
        {"endpoint": "create", "status": 500, "after_create": "maybe"},
    ):
        response = raw_http(emu, "POST", "/_emulator/config", {"fail_next": [fault]})
        assert response.status == 400, fault


def test_error_after_create_rate(client, emu) -> None:
    # Given every create answers an error from --error-statuses after making its batch
    admin(
        emu,
        "POST",
        "config",
        {"error_after_create_rate": 1, "error_statuses": [529]},
    )
    for _ in range(2):
        with pytest.raises(anthropic.OverloadedError):
            client.messages.batches.create(requests=[req("a")])
    # Then both batches were made, and other endpoints are untouched
    assert len(client.messages.batches.list().data) == 2
    stats = emu.stats()
    assert stats["batches_created"] == 2
    assert stats["faults_by_source"] == {"error_after_create_rate": 2}


def test_a_fault_for_one_key_spares_every_other_key(client, emu) -> None:
    # Given a lost answer meant for another key only
    from batchline.emulator.wire import key_id

    other = "sk-test-another-client-0000000000"
    fault = {"endpoint": "create", "status": "lost", "key_id": key_id(other)}
    admin(emu, "POST", "config", {"fail_next": [fault]})
    # When this key creates, its answer arrives; the fault still waits for the other key
    made = client.messages.batches.create(requests=[req("a")])
    assert made.id.startswith("msgbatch_")
    assert admin(emu, "GET", "config")["fail_next"] == [fault]
    # Then the other key's create loses its answer (the batch is made all the same)
    with pytest.raises(anthropic.APIConnectionError):
        sdk(emu, api_key=other).messages.batches.create(requests=[req("b")])
    assert admin(emu, "GET", "config")["fail_next"] == []
    assert emu.stats()["batches_created"] == 2
