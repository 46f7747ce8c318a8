"""Every endpoint through the official SDK (sync and async), with strict response validation."""

from __future__ import annotations

import asyncio
import time

import anthropic
import orjson
import pytest
from anthropic._models import validate_type
from anthropic.types.messages import MessageBatchIndividualResponse

from tests.emulator.conftest import (
    MODEL,
    admin,
    async_sdk,
    raw_http,
    req,
    results_by_id,
    sdk,
    wait_ended,
)
from tests.support.procs import API_KEY, Emulator

BATCH_FIELDS = {
    "id",
    "type",
    "processing_status",
    "request_counts",
    "ended_at",
    "created_at",
    "expires_at",
    "archived_at",
    "cancel_initiated_at",
    "results_url",
}
AUTH = {"x-api-key": API_KEY}


def test_lifecycle_create_retrieve_results_delete(emulator: Emulator) -> None:
    # Given the emulator of the shared fixture and a strict client
    with sdk(emulator) as client:
        # When a batch of three requests is created
        batch = client.messages.batches.create(
            requests=[req("a", "first"), req("b", "second"), req("c", "third")]
        )
        # Then it is in progress, whole-batch processing, with no results yet
        assert batch.id.startswith("msgbatch_")
        assert batch.type == "message_batch"
        assert batch.processing_status == "in_progress"
        assert batch.request_counts.processing == 3
        assert batch.request_counts.succeeded == 0
        assert batch.results_url is None
        assert batch.ended_at is None
        assert (batch.expires_at - batch.created_at).total_seconds() == 24 * 3600

        # When it has ended
        ended = wait_ended(client, batch.id)
        # Then the counts are final and results_url is a relative path
        assert ended.request_counts.processing == 0
        assert ended.request_counts.succeeded == 3
        assert ended.results_url == f"/v1/messages/batches/{batch.id}/results"
        assert ended.ended_at is not None and ended.ended_at >= ended.created_at

        # And each result echoes its own request
        results = results_by_id(client, batch.id)
        assert set(results) == {"a", "b", "c"}
        for custom_id, text in (("a", "first"), ("b", "second"), ("c", "third")):
            result = results[custom_id]
            assert result.type == "succeeded"
            message = result.message
            assert message.content[0].type == "text"
            assert message.content[0].text == f"echo: {text}"
            assert message.id.startswith("msg_")
            assert message.model == MODEL
            assert message.role == "assistant"
            assert message.stop_reason == "end_turn"
            assert message.usage.service_tier == "batch"
            assert message.usage.cache_creation_input_tokens == 0
            assert message.usage.cache_read_input_tokens == 0
            assert message.usage.input_tokens >= 1
            assert message.usage.output_tokens >= 1

        # When it is deleted
        deleted = client.messages.batches.delete(batch.id)
        # Then it is gone
        assert deleted.id == batch.id and deleted.type == "message_batch_deleted"
        with pytest.raises(anthropic.NotFoundError):
            client.messages.batches.retrieve(batch.id)


def test_json_responses_carry_every_field_content_type_and_request_id(client, emu) -> None:
    # Given a created batch, read raw
    raw = client.messages.batches.with_raw_response.create(requests=[req("a")])
    # Then the answer is JSON with a request-id header and every MessageBatch field
    assert raw.headers["content-type"] == "application/json"
    assert raw.headers["request-id"].startswith("req_")
    body = raw.http_response.json()
    assert set(body) == BATCH_FIELDS
    assert body["archived_at"] is None and body["cancel_initiated_at"] is None
    assert set(body["request_counts"]) == {
        "processing",
        "succeeded",
        "errored",
        "canceled",
        "expired",
    }
    # And timestamps are RFC 3339 in UTC
    assert body["created_at"].endswith("Z")


def test_results_jsonl_lines_validate_strictly_and_have_no_blank_lines(client, emu) -> None:
    # Given an ended batch mixing all outcomes
    batch = client.messages.batches.create(
        requests=[
            req("ok", "fine"),
            req("err", "x [[emulate:errored:overloaded_error]]"),
            req("exp", "x [[emulate:expired]]"),
            req("bad", "x", max_tokens=0),
        ]
    )
    wait_ended(client, batch.id)
    # When the JSONL is fetched raw
    response = raw_http(emu, "GET", f"/v1/messages/batches/{batch.id}/results", headers=AUTH)
    # Then every line is one object that the SDK's types accept under strict validation
    assert response.status == 200
    assert response.body.endswith(b"\n")
    lines = response.body.split(b"\n")[:-1]
    assert len(lines) == 4
    assert all(line.strip() for line in lines)
    parsed = [
        validate_type(type_=MessageBatchIndividualResponse, value=orjson.loads(line))
        for line in lines
    ]
    assert {p.custom_id: p.result.type for p in parsed} == {
        "ok": "succeeded",
        "err": "errored",
        "exp": "expired",
        "bad": "errored",
    }


def test_results_before_end_are_refused(client, emu) -> None:
    # Given a batch still in progress
    admin(emu, "POST", "config", {"processing_seconds": 30})
    batch = client.messages.batches.create(requests=[req("a")])
    # Then the SDK finds no results_url, and a direct GET is refused
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        client.messages.batches.results(batch.id)
    response = raw_http(emu, "GET", f"/v1/messages/batches/{batch.id}/results", headers=AUTH)
    assert response.status == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_unknown_ids_get_404_on_every_endpoint(client, emu) -> None:
    missing = "msgbatch_01doesnotexist000000000"
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.batches.retrieve(missing)
    assert info.value.status_code == 404
    assert info.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.cancel(missing)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.delete(missing)
    response = raw_http(emu, "GET", f"/v1/messages/batches/{missing}/results", headers=AUTH)
    assert response.status == 404


def test_unknown_path_answers_the_error_envelope(emu) -> None:
    response = raw_http(emu, "GET", "/v1/nothing-here", headers=AUTH)
    assert response.status == 404
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert body["request_id"] == response.headers["request-id"]


def test_cancel_midway_keeps_early_outcomes_and_cancels_the_rest(client, emu) -> None:
    # Given a 100-request batch that takes 4 s, a third of the way through
    admin(emu, "POST", "config", {"processing_seconds": 4, "canceling_seconds": 0.3})
    requests = [req(f"r{i:03d}", f"text {i}") for i in range(100)]
    batch = client.messages.batches.create(requests=requests)
    time.sleep(1.3)
    # When it is canceled
    canceling = client.messages.batches.cancel(batch.id)
    # Then it is canceling, with the cancel time set and the whole batch still processing
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    assert canceling.request_counts.processing == 100
    assert canceling.results_url is None
    # And canceling again is harmless
    assert client.messages.batches.cancel(batch.id).processing_status == "canceling"

    # When it has ended
    ended = wait_ended(client, batch.id)
    counts = ended.request_counts
    # Then requests done before the cancel kept their outcome and the later ones are canceled
    assert 0 < counts.succeeded < 100
    assert counts.succeeded + counts.canceled == 100
    results = results_by_id(client, batch.id)
    kinds = [results[f"r{i:03d}"].type for i in range(100)]
    assert kinds == ["succeeded"] * counts.succeeded + ["canceled"] * counts.canceled
    # And an ended batch cannot be canceled
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.cancel(batch.id)


def test_delete_is_refused_until_the_batch_ends(client, emu) -> None:
    admin(emu, "POST", "config", {"processing_seconds": 30, "canceling_seconds": 0.1})
    batch = client.messages.batches.create(requests=[req("a")])
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.batches.delete(batch.id)
    assert info.value.body["error"]["type"] == "invalid_request_error"
    client.messages.batches.cancel(batch.id)
    ended = wait_ended(client, batch.id)
    assert ended.request_counts.canceled == 1
    assert client.messages.batches.delete(batch.id).id == batch.id


def test_async_client_drives_every_endpoint(emu) -> None:
    async def scenario() -> None:
        async with async_sdk(emu) as client:
            batches = client.messages.batches
            first = await batches.create(requests=[req("a", "one")])
            second = await batches.create(requests=[req("b", "two"), req("c", "three")])
            listed = [b.id async for b in batches.list(limit=1)]
            assert listed == [second.id, first.id]
            while (await batches.retrieve(second.id)).processing_status != "ended":
                await asyncio.sleep(0.05)
            texts = {
                line.custom_id: line.result.message.content[0].text
                async for line in await batches.results(second.id)
                if line.result.type == "succeeded"
            }
            assert texts == {"b": "echo: two", "c": "echo: three"}
            admin(emu, "POST", "config", {"processing_seconds": 30})
            third = await batches.create(requests=[req("d")])
            assert (await batches.cancel(third.id)).processing_status == "canceling"
            assert (await batches.delete(second.id)).type == "message_batch_deleted"
            with pytest.raises(anthropic.NotFoundError):
                await batches.retrieve(second.id)

    asyncio.run(scenario())
