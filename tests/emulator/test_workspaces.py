"""Workspaces, per-key accounting and hidden batches: the batches one key can and cannot see."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from batchline.emulator.wire import key_id
from tests.emulator.conftest import admin, raw_http, req, sdk, wait_ended
from tests.support.procs import Emulator

PROD_A = "sk-prod-aaaaaaaaaaaa"
PROD_B = "sk-prod-bbbbbbbbbbbb"
STAGING = "sk-staging-cccccccccc"
UNKNOWN_ID = "msgbatch_01NoSuchBatchAnywhere00"


def _workspaces(emu: Emulator, **workspaces: list[str]) -> None:
    admin(emu, "POST", "config", {"workspaces": workspaces})


def _not_found(call: Any) -> dict[str, Any]:
    """The error body of a call the SDK must refuse with 404."""
    with pytest.raises(anthropic.NotFoundError) as info:
        call()
    body = info.value.body
    assert isinstance(body, dict)
    return body


def _same_as_unknown(body: dict[str, Any], batch_id: str, unknown: dict[str, Any]) -> bool:
    """Whether a 404 for batch_id reads exactly like the one for an id never made."""
    mine = body["error"]["message"].replace(batch_id, "ID")
    theirs = unknown["error"]["message"].replace(UNKNOWN_ID, "ID")
    return body["error"]["type"] == unknown["error"]["type"] == "not_found_error" and (
        mine == theirs
    )


def test_another_workspaces_batch_is_unknown_on_every_endpoint(emu) -> None:
    # Given two workspaces, production with two keys and staging with one
    _workspaces(emu, prod=[PROD_A, PROD_B], staging=[STAGING])
    a, b, staging = (sdk(emu, api_key=key) for key in (PROD_A, PROD_B, STAGING))
    with a, b, staging:
        # When each key makes batches, one of them still running
        first = a.messages.batches.create(requests=[req("a")]).id
        second = b.messages.batches.create(requests=[req("b")]).id
        theirs = staging.messages.batches.create(requests=[req("s")]).id
        admin(emu, "POST", "config", {"processing_seconds": 60})
        running = a.messages.batches.create(requests=[req("r")]).id
        wait_ended(a, first)
        wait_ended(a, second)
        wait_ended(staging, theirs)

        # Then list shows a workspace every batch of its keys, newest first, to any of its keys
        assert [x.id for x in a.messages.batches.list()] == [running, second, first]
        assert [x.id for x in b.messages.batches.list()] == [running, second, first]
        assert [x.id for x in staging.messages.batches.list()] == [theirs]

        # And to staging, every production batch answers exactly like an id never made
        unknown = _not_found(lambda: staging.messages.batches.retrieve(UNKNOWN_ID))
        calls = [
            lambda: staging.messages.batches.retrieve(first),
            lambda: staging.messages.batches.cancel(running),
            lambda: staging.messages.batches.delete(second),
            lambda: list(staging.messages.batches.results(first)),
        ]
        for call, batch_id in zip(calls, (first, running, second, first), strict=True):
            assert _same_as_unknown(_not_found(call), batch_id, unknown)
        path = f"/v1/messages/batches/{first}/results"
        raw = raw_http(emu, "GET", path, headers={"x-api-key": STAGING})
        assert raw.status == 404
        assert _same_as_unknown(raw.json(), first, unknown)

        # And nothing staging tried changed production's batches
        assert a.messages.batches.retrieve(running).processing_status == "in_progress"
        assert a.messages.batches.delete(second).id == second
        assert len(list(a.messages.batches.results(first))) == 1
        assert staging.messages.batches.delete(theirs).id == theirs

    # And a key in no workspace is refused, even one that worked before workspaces were set
    with sdk(emu) as outsider, pytest.raises(anthropic.AuthenticationError):
        outsider.messages.batches.list()


def test_moving_a_key_to_another_workspace_hides_its_batches_until_moved_back(emu) -> None:
    # Given a key that made a batch in production
    _workspaces(emu, prod=[PROD_A], staging=[STAGING])
    with sdk(emu, api_key=PROD_A) as client, sdk(emu, api_key=STAGING) as staging:
        made = wait_ended(client, client.messages.batches.create(requests=[req("a")]).id)
        theirs = staging.messages.batches.create(requests=[req("s")]).id

        # When an operator swaps that key into the staging workspace
        _workspaces(emu, prod=[], staging=[STAGING, PROD_A])

        # Then every batch made before is unknown to it, and it sees staging's instead
        with pytest.raises(anthropic.NotFoundError):
            client.messages.batches.retrieve(made.id)
        with pytest.raises(anthropic.NotFoundError):
            list(client.messages.batches.results(made.id))
        assert [x.id for x in client.messages.batches.list()] == [theirs]

        # When it is moved back
        _workspaces(emu, prod=[PROD_A], staging=[STAGING])

        # Then the batch is there again, unchanged
        again = client.messages.batches.retrieve(made.id)
        assert again.model_dump() == made.model_dump()
        assert [x.id for x in client.messages.batches.list()] == [made.id]
        assert len(list(client.messages.batches.results(made.id))) == 1


def test_per_key_accounting_without_showing_a_key(emu) -> None:
    # Given two keys of one workspace, each doing something different
    _workspaces(emu, prod=[PROD_A, PROD_B])
    with sdk(emu, api_key=PROD_A) as a, sdk(emu, api_key=PROD_B) as b:
        downloaded = a.messages.batches.create(requests=[req("x"), req("y")])
        admin(emu, "POST", "config", {"processing_seconds": 60})
        canceled = b.messages.batches.create(requests=[req("z")])
        wait_ended(a, downloaded.id)  # some retrieves
        list(a.messages.batches.results(downloaded.id))  # one more retrieve, one download
        b.messages.batches.cancel(canceled.id)
        b.messages.batches.list()
    with (
        sdk(emu, api_key="sk-never-listed") as stranger,
        pytest.raises(anthropic.AuthenticationError),
    ):
        stranger.messages.batches.list()

    # Then each key is counted under its key_id
    stats = emu.stats()
    by_key = stats["by_key"]
    a_stats, b_stats = by_key[key_id(PROD_A)], by_key[key_id(PROD_B)]
    assert (a_stats["batches_created"], a_stats["requests_received"]) == (1, 2)
    assert (b_stats["batches_created"], b_stats["requests_received"]) == (1, 1)
    assert a_stats["calls"]["create"] == 1 and a_stats["calls"]["results"] == 1
    assert a_stats["calls"]["cancel"] == 0 and a_stats["calls"]["list"] == 0
    assert b_stats["calls"] == {
        "create": 1,
        "retrieve": 0,
        "list": 1,
        "cancel": 1,
        "delete": 0,
        "results": 0,
    }
    # a refused key is counted too: a stale key still in use shows up
    assert by_key[key_id("sk-never-listed")]["calls"]["list"] == 1
    assert sum(sum(entry["calls"].values()) for entry in by_key.values()) == sum(
        stats["calls"].values()
    )

    # And the history says who made each batch and what was done to it
    history = {entry["id"]: entry for entry in stats["batches"]}
    first, second = history[downloaded.id], history[canceled.id]
    assert (first["key_id"], first["workspace"]) == (key_id(PROD_A), "prod")
    assert (second["key_id"], second["workspace"]) == (key_id(PROD_B), "prod")
    assert first["cancel_requested"] is False and second["cancel_requested"] is True
    assert first["retrieves"] == a_stats["calls"]["retrieve"] >= 2
    assert second["retrieves"] == 0
    assert (first["results_downloads"], second["results_downloads"]) == (1, 0)

    # And no key appears anywhere in the stats or the call log
    for path in ("/_emulator/stats", "/_emulator/calls"):
        body = raw_http(emu, "GET", path).body
        assert not any(key.encode() in body for key in (PROD_A, PROD_B, "sk-never-listed"))
    assert {call["key_id"] for call in admin(emu, "GET", "calls")} == {
        key_id(PROD_A),
        key_id(PROD_B),
        key_id("sk-never-listed"),
    }


def test_without_workspaces_every_key_is_in_the_default_workspace(client, emu) -> None:
    with sdk(emu, api_key="sk-some-other-key") as other:
        theirs = other.messages.batches.create(requests=[req("o")]).id
    mine = client.messages.batches.create(requests=[req("m")]).id
    assert [x.id for x in client.messages.batches.list()] == [mine, theirs]
    assert client.messages.batches.retrieve(theirs).id == theirs
    assert {entry["workspace"] for entry in emu.stats()["batches"]} == {"default"}


def test_results_downloads_count_only_answers_with_a_200(client, emu) -> None:
    batch = client.messages.batches.create(requests=[req("a")])
    path = f"/v1/messages/batches/{batch.id}/results"
    auth = {"x-api-key": client.api_key}
    assert raw_http(emu, "GET", path, headers=auth).status == 400  # still processing
    wait_ended(client, batch.id)
    assert raw_http(emu, "GET", path, headers=auth).status == 200
    assert raw_http(emu, "GET", path, headers=auth).status == 200
    assert emu.stats()["batches"][0]["results_downloads"] == 2


def test_hidden_batches_are_unknown_to_everyone_until_shown_again(client, emu) -> None:
    # Given two ended batches
    kept = wait_ended(client, client.messages.batches.create(requests=[req("k")]).id)
    hidden = wait_ended(client, client.messages.batches.create(requests=[req("h")]).id)
    # When one is hidden
    admin(emu, "POST", "config", {"hidden_batches": [hidden.id]})
    # Then it answers 404 on every endpoint and list leaves it out
    unknown = _not_found(lambda: client.messages.batches.retrieve(UNKNOWN_ID))
    for call in (
        lambda: client.messages.batches.retrieve(hidden.id),
        lambda: client.messages.batches.cancel(hidden.id),
        lambda: client.messages.batches.delete(hidden.id),
        lambda: list(client.messages.batches.results(hidden.id)),
    ):
        assert _same_as_unknown(_not_found(call), hidden.id, unknown)
    assert [x.id for x in client.messages.batches.list()] == [kept.id]
    page = client.messages.batches.list(limit=1)
    assert [x.id for x in page.data] == [kept.id] and page.has_more is False
    with sdk(emu, api_key="sk-another-key") as other, pytest.raises(anthropic.NotFoundError):
        other.messages.batches.retrieve(hidden.id)
    # When it is taken off the list
    admin(emu, "POST", "config", {"hidden_batches": []})
    # Then it is back, unchanged, and can be used again
    assert client.messages.batches.retrieve(hidden.id).model_dump() == hidden.model_dump()
    assert [x.id for x in client.messages.batches.list()] == [hidden.id, kept.id]
    assert len(list(client.messages.batches.results(hidden.id))) == 1


def test_reset_clears_hidden_batches(client, emu) -> None:
    batch = client.messages.batches.create(requests=[req("a")])
    admin(emu, "POST", "config", {"hidden_batches": [batch.id]})
    assert admin(emu, "POST", "reset")["config"]["hidden_batches"] == []


def test_workspaces_config_is_validated_without_showing_a_key(emu) -> None:
    for bad in (
        {"workspaces": {"prod": [PROD_A], "staging": [PROD_A]}},
        {"workspaces": {"prod": [""]}},
        {"workspaces": ["prod"]},
        {"workspaces": "prod"},
        {"hidden_batches": [3]},
    ):
        response = raw_http(emu, "POST", "/_emulator/config", bad)
        assert response.status == 400, bad
        assert PROD_A.encode() not in response.body
    assert admin(emu, "GET", "config")["workspaces"] == {}
    config = admin(emu, "POST", "config", {"workspaces": "prod=k1,k2;staging=k3"})
    assert config["workspaces"] == {"prod": ["k1", "k2"], "staging": ["k3"]}
