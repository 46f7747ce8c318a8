"""Listing batches: newest first, limit bounds, after_id/before_id cursors, SDK auto-pagination."""

from __future__ import annotations

import anthropic
import pytest

from tests.emulator.conftest import raw_http, req
from tests.support.procs import API_KEY


def _create(client: anthropic.Anthropic, count: int) -> list[str]:
    """Ids of `count` new batches, oldest first."""
    return [client.messages.batches.create(requests=[req(f"r{i}")]).id for i in range(count)]


def test_auto_pagination_walks_every_page_newest_first(client, emu) -> None:
    # Given seven batches
    ids = _create(client, 7)
    # When the SDK auto-paginates three at a time
    first_page = client.messages.batches.list(limit=3)
    listed = [batch.id for batch in first_page]
    # Then it sees all seven, newest first, across three pages
    assert listed == ids[::-1]
    assert [b.id for b in first_page.data] == ids[::-1][:3]
    assert first_page.has_more is True
    pages = list(first_page.iter_pages())
    assert [len(page.data) for page in pages] == [3, 3, 1]
    assert pages[-1].has_more is False


def test_after_id_and_before_id_cursors(client, emu) -> None:
    ids = _create(client, 6)
    newest_first = ids[::-1]
    # after_id pages toward older batches
    page = client.messages.batches.list(limit=2, after_id=newest_first[1])
    assert [b.id for b in page.data] == newest_first[2:4]
    assert page.first_id == newest_first[2] and page.last_id == newest_first[3]
    assert page.has_more is True
    last = client.messages.batches.list(limit=5, after_id=newest_first[3])
    assert [b.id for b in last.data] == newest_first[4:]
    assert last.has_more is False
    # before_id gives the page just newer than the cursor, still newest first
    page = client.messages.batches.list(limit=2, before_id=newest_first[4])
    assert [b.id for b in page.data] == newest_first[2:4]
    assert page.has_more is True
    top = client.messages.batches.list(limit=2, before_id=newest_first[2])
    assert [b.id for b in top.data] == newest_first[0:2]
    assert top.has_more is False
    # and the SDK follows before_id pages toward the newest
    walked = [b.id for b in client.messages.batches.list(limit=2, before_id=newest_first[5])]
    assert sorted(walked) == sorted(newest_first[:5])


def test_default_limit_is_20_and_empty_list_has_null_cursors(client, emu) -> None:
    empty = client.messages.batches.list()
    assert empty.data == [] and empty.has_more is False
    assert empty.first_id is None and empty.last_id is None
    ids = _create(client, 21)
    page = client.messages.batches.list()
    assert len(page.data) == 20
    assert page.has_more is True
    assert page.data[0].id == ids[-1]


@pytest.mark.parametrize("limit", [0, 1001, -3])
def test_limit_out_of_range_is_a_bad_request(client, emu, limit: int) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.batches.list(limit=limit)
    assert info.value.body["error"]["type"] == "invalid_request_error"


def test_limit_bounds_themselves_are_accepted(client, emu) -> None:
    _create(client, 2)
    assert len(client.messages.batches.list(limit=1).data) == 1
    assert len(client.messages.batches.list(limit=1000).data) == 2


def test_non_integer_limit_is_a_bad_request(emu) -> None:
    headers = {"x-api-key": API_KEY}
    response = raw_http(emu, "GET", "/v1/messages/batches?limit=ten", headers=headers)
    assert response.status == 400
