"""The requests-per-minute limit and the admin endpoints that let tests count calls."""

from __future__ import annotations

from datetime import datetime

import anthropic
import pytest

from tests.emulator.conftest import admin, raw_http, req, sdk, wait_ended

RATELIMIT_HEADERS = (
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
)


def test_rpm_limit_refuses_the_call_over_the_limit(client, emu) -> None:
    # Given a limit of 3 calls a minute across all batch endpoints
    admin(emu, "POST", "config", {"rpm_limit": 3})
    # When three calls to different endpoints are made
    raw = client.messages.batches.with_raw_response.create(requests=[req("a")])
    batch = raw.parse()
    remaining = [raw.headers["anthropic-ratelimit-requests-remaining"]]
    raw = client.messages.batches.with_raw_response.retrieve(batch.id)
    remaining.append(raw.headers["anthropic-ratelimit-requests-remaining"])
    raw = client.messages.batches.with_raw_response.list()
    remaining.append(raw.headers["anthropic-ratelimit-requests-remaining"])
    # Then each answer counts down the same pool
    assert remaining == ["2", "1", "0"]
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "3"
    reset_at = datetime.fromisoformat(raw.headers["anthropic-ratelimit-requests-reset"])
    assert reset_at.tzinfo is not None
    # And the fourth call is refused with 429, retry-after and the rate-limit headers
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.batches.cancel(batch.id)
    headers = info.value.response.headers
    assert info.value.body["error"]["type"] == "rate_limit_error"
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert headers["anthropic-ratelimit-requests-limit"] == "3"
    # And the refused call did nothing and is logged as a 429
    assert emu.stats()["rate_limited"] == 1
    calls = admin(emu, "GET", "calls")
    assert [(c["endpoint"], c["status"]) for c in calls] == [
        ("create", 200),
        ("retrieve", 200),
        ("list", 200),
        ("cancel", 429),
    ]
    admin(emu, "POST", "config", {"rpm_limit": 0})
    assert client.messages.batches.retrieve(batch.id).cancel_initiated_at is None


def test_rate_limit_headers_only_when_a_limit_is_on(client, emu) -> None:
    raw = client.messages.batches.with_raw_response.list()
    assert not any(name in raw.headers for name in RATELIMIT_HEADERS)
    admin(emu, "POST", "config", {"rpm_limit": 100})
    raw = client.messages.batches.with_raw_response.list()
    assert all(name in raw.headers for name in RATELIMIT_HEADERS)
    # including error answers of batch endpoints
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.batches.retrieve("msgbatch_01missing")
    assert info.value.response.headers["anthropic-ratelimit-requests-remaining"] == "98"


def test_rpm_limit_flag_and_the_admin_endpoints_are_not_limited(emulator_factory) -> None:
    emu = emulator_factory("--rpm-limit", "1")
    with sdk(emu) as client:
        client.messages.batches.list()
        with pytest.raises(anthropic.RateLimitError):
            client.messages.batches.list()
    for _ in range(3):
        assert emu.stats()["rate_limited"] == 1


def test_stats_count_calls_statuses_and_batches(client, emu) -> None:
    # Given some traffic
    first = client.messages.batches.create(requests=[req("a"), req("b")])
    second = client.messages.batches.create(requests=[req("c")])
    wait_ended(client, first.id)
    list(client.messages.batches.results(first.id))
    client.messages.batches.list()
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve("msgbatch_01missing")
    wait_ended(client, second.id)
    client.messages.batches.delete(second.id)
    # Then the stats add up
    stats = emu.stats()
    assert stats["batches_created"] == 2
    assert stats["requests_received"] == 3
    calls = stats["calls"]
    assert calls["create"] == 2 and calls["list"] == 1 and calls["results"] == 1
    assert calls["delete"] == 1 and calls["cancel"] == 0
    assert calls["retrieve"] >= 4  # two waits, the SDK's own before results, the 404
    assert stats["responses_by_status"]["404"] == 1
    assert sum(stats["responses_by_status"].values()) == sum(calls.values())
    assert stats["rate_limited"] == 0 and stats["faults_injected"] == 0
    # And every batch made is listed, deleted ones too
    by_id = {b["id"]: b for b in stats["batches"]}
    assert by_id[first.id]["request_count"] == 2
    assert by_id[first.id]["processing_status"] == "ended"
    assert by_id[second.id]["deleted"] is True
    assert datetime.fromisoformat(by_id[first.id]["created_at"]) == first.created_at
    # And the call log has one entry per call, in time order
    log = admin(emu, "GET", "calls")
    assert len(log) == sum(calls.values())
    assert [c["t"] for c in log] == sorted(c["t"] for c in log)
    assert {c["endpoint"] for c in log} == {"create", "retrieve", "list", "results", "delete"}


def test_reset_clears_batches_stats_and_one_shot_faults(client, emu) -> None:
    client.messages.batches.create(requests=[req("a")])
    admin(emu, "POST", "config", {"lost_create_next": 2, "fail_next": [{"status": 500}]})
    admin(emu, "POST", "reset")
    stats = emu.stats()
    assert stats["batches_created"] == 0 and stats["batches"] == []
    assert sum(stats["calls"].values()) == 0
    assert admin(emu, "GET", "calls") == []
    config = admin(emu, "GET", "config")
    assert config["lost_create_next"] == 0 and config["fail_next"] == []
    assert client.messages.batches.list().data == []


def test_config_returns_everything_and_refuses_bad_values(emu) -> None:
    config = emu.configure(rpm_limit=50, transient_404=True)
    assert config["rpm_limit"] == 50 and config["transient_404"] is True
    assert {
        "api_keys",
        "processing_seconds",
        "canceling_seconds",
        "rpm_limit",
        "queue_limit",
        "error_rate",
        "error_statuses",
        "latency_ms",
        "drop_rate",
        "lost_create_rate",
        "transient_404",
        "seed",
        "max_requests",
        "max_body_bytes",
        "lost_create_next",
        "fail_next",
    } <= set(config)
    for bad in (
        {"no_such_flag": 1},
        {"error_rate": 1.5},
        {"rpm_limit": -1},
        {"error_statuses": [200]},
        {"fail_next": [{"endpoint": "nowhere", "status": 500}]},
        {"fail_next": [{"endpoint": "create", "status": "explode"}]},
    ):
        response = raw_http(emu, "POST", "/_emulator/config", bad)
        assert response.status == 400, bad
        assert response.json()["error"]["type"] == "invalid_request_error"
    # a refused change changes nothing
    assert admin(emu, "GET", "config")["rpm_limit"] == 50
