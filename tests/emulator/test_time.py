"""Time as the server keeps it: expiry, overdue batches and a clock apart from the client's."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import anthropic
import pytest

from tests.emulator.conftest import admin, raw_http, req, results_by_id, sdk, wait_ended
from tests.support.procs import API_KEY, Emulator, wait_for


def test_requests_not_done_by_expiry_end_expired(client, emu) -> None:
    # Given batches that need 2 s but expire after 1 s
    admin(emu, "POST", "config", {"processing_seconds": 2, "expiry_seconds": 1})
    batch = client.messages.batches.create(requests=[req(f"r{i}") for i in range(10)])
    assert batch.expires_at - batch.created_at == timedelta(seconds=1)
    # When it ends
    ended = wait_ended(client, batch.id)
    # Then it ended at expires_at, with the half not done by then expired
    assert ended.ended_at == ended.expires_at
    counts = ended.request_counts
    assert (counts.succeeded, counts.expired, counts.canceled, counts.processing) == (5, 5, 0, 0)
    results = results_by_id(client, batch.id)
    assert {cid for cid, result in results.items() if result.type == "succeeded"} == {
        f"r{i}" for i in range(5)
    }
    assert {cid for cid, result in results.items() if result.type == "expired"} == {
        f"r{i}" for i in range(5, 10)
    }


def test_a_cancel_before_expiry_still_cancels(client, emu) -> None:
    admin(emu, "POST", "config", {"processing_seconds": 20, "expiry_seconds": 10})
    batch = client.messages.batches.create(requests=[req("a"), req("b")])
    client.messages.batches.cancel(batch.id)
    ended = wait_ended(client, batch.id)
    assert (ended.request_counts.canceled, ended.request_counts.expired) == (2, 0)
    assert ended.ended_at is not None and ended.ended_at < ended.expires_at


def test_a_stalled_batch_stays_in_progress_past_expiry_until_canceled(client, emu) -> None:
    # Given the next create stalls, and batches expire after half a second
    admin(emu, "POST", "config", {"stall_next_create": 1, "expiry_seconds": 0.5})
    stalled = client.messages.batches.create(requests=[req("a"), req("b")])
    normal = client.messages.batches.create(requests=[req("c")])
    assert admin(emu, "GET", "config")["stall_next_create"] == 0
    # When its expiry has passed
    wait_ended(client, normal.id)
    wait_for(
        lambda: datetime.now(UTC) > stalled.expires_at + timedelta(seconds=0.2),
        5,
        what="the stalled batch's expiry to pass",
    )
    # Then it is still in progress: an overdue batch
    overdue = client.messages.batches.retrieve(stalled.id)
    assert overdue.processing_status == "in_progress"
    assert overdue.request_counts.processing == 2
    assert overdue.results_url is None
    assert emu.stats()["queued_requests"] == 2
    # When it is canceled, it ends as any canceled batch does
    canceling = client.messages.batches.cancel(stalled.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    assert canceling.cancel_initiated_at > canceling.expires_at
    ended = wait_ended(client, stalled.id)
    assert ended.ended_at is not None and ended.ended_at > ended.expires_at
    counts = ended.request_counts
    assert counts.processing == 0
    assert counts.succeeded + counts.canceled == 2
    assert len(results_by_id(client, stalled.id)) == 2


def test_stall_next_create_is_cleared_by_a_reset(emu) -> None:
    admin(emu, "POST", "config", {"stall_next_create": 3})
    assert admin(emu, "POST", "reset")["config"]["stall_next_create"] == 0


def _server_date(emu: Emulator, path: str = "/v1/messages/batches") -> datetime:
    response = raw_http(emu, "GET", path, headers={"x-api-key": API_KEY})
    return parsedate_to_datetime(response.headers["date"])


@pytest.mark.parametrize("offset_s", [3600.0, -5400.0])
def test_the_server_clock_runs_apart_from_the_clients(client, emu, offset_s: float) -> None:
    # Given a server clock offset_s apart from the host's
    admin(emu, "POST", "config", {"clock_offset_s": offset_s, "rpm_limit": 3})
    offset = timedelta(seconds=offset_s)
    before = datetime.now(UTC)
    # When a batch is made
    batch = client.messages.batches.create(requests=[req("a")])
    after = datetime.now(UTC)
    # Then its timestamps are on the server's clock
    slack = timedelta(seconds=1)
    assert before + offset - slack <= batch.created_at <= after + offset + slack
    assert batch.expires_at - batch.created_at == timedelta(hours=24)
    # And so is the Date header, on batch endpoints and the admin ones alike
    for path in ("/v1/messages/batches", "/_emulator/config"):
        date = _server_date(emu, path)
        assert abs(date - (datetime.now(UTC) + offset)) < timedelta(seconds=3)
    # And the batch still ends after its processing time, stamped on the same clock
    admin(emu, "POST", "config", {"rpm_limit": 0})
    ended = wait_ended(client, batch.id)
    assert ended.ended_at is not None
    took = ended.ended_at - ended.created_at
    assert abs(took - timedelta(seconds=0.3)) <= timedelta(microseconds=2)  # rounding
    # And the call log stays on the host's clock, in order
    log = admin(emu, "GET", "calls")
    assert all(abs(call["t"] - time.time()) < 30 for call in log)
    assert [call["t"] for call in log] == sorted(call["t"] for call in log)


def test_the_rate_limit_works_with_a_clock_offset(emu) -> None:
    admin(emu, "POST", "config", {"clock_offset_s": -7200, "rpm_limit": 2})
    with sdk(emu) as client:
        client.messages.batches.list()
        raw = client.messages.batches.with_raw_response.list()
        assert raw.headers["anthropic-ratelimit-requests-remaining"] == "0"
        reset_at = datetime.fromisoformat(raw.headers["anthropic-ratelimit-requests-reset"])
        expected = datetime.now(UTC) - timedelta(hours=2) + timedelta(seconds=60)
        assert abs(reset_at - expected) < timedelta(seconds=5)
        with pytest.raises(anthropic.RateLimitError) as info:
            client.messages.batches.list()
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 60


def test_time_flags_are_validated(emu) -> None:
    for bad in (
        {"expiry_seconds": 0},
        {"expiry_seconds": -1},
        {"clock_offset_s": "soon"},
        {"clock_offset_s": 1e12},
        {"stall_next_create": -1},
    ):
        assert raw_http(emu, "POST", "/_emulator/config", bad).status == 400, bad
