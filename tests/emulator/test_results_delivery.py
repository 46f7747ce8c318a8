"""How results reach a client: the order of their lines, and a results_url on another host."""

from __future__ import annotations

import socket
from itertools import pairwise
from typing import Any

import anthropic
import orjson
import pytest

from tests.emulator.conftest import admin, raw_http, req, sdk, wait_ended
from tests.support.procs import API_KEY, Emulator

LINES = 30


def _ended_batch(client: anthropic.Anthropic) -> str:
    batch = client.messages.batches.create(
        requests=[req(f"r{i}", f"prompt {i}") for i in range(LINES)]
    )
    return str(wait_ended(client, batch.id).id)


def _download(emu: Emulator, batch_id: str) -> list[bytes]:
    """The raw result lines of one download through the emulator's own address."""
    path = f"/v1/messages/batches/{batch_id}/results"
    response = raw_http(emu, "GET", path, headers={"x-api-key": API_KEY})
    assert response.status == 200, response.body
    lines = response.body.split(b"\n")
    assert lines[-1] == b""
    return lines[:-1]


def _ids(lines: list[bytes]) -> list[str]:
    return [orjson.loads(line)["custom_id"] for line in lines]


def test_default_order_is_a_fixed_shuffle(client, emu) -> None:
    batch_id = _ended_batch(client)
    first = _ids(_download(emu, batch_id))
    assert first != [f"r{i}" for i in range(LINES)]
    assert _ids(_download(emu, batch_id)) == first


def test_request_order(client, emu) -> None:
    admin(emu, "POST", "config", {"results_order": "request"})
    batch_id = _ended_batch(client)
    assert _ids(_download(emu, batch_id)) == [f"r{i}" for i in range(LINES)]
    sdk_ids = [line.custom_id for line in client.messages.batches.results(batch_id)]
    assert sdk_ids == [f"r{i}" for i in range(LINES)]


def test_random_order_changes_on_every_download_but_not_the_lines(client, emu) -> None:
    # Given the random order
    admin(emu, "POST", "config", {"results_order": "random", "seed": 5})
    batch_id = _ended_batch(client)
    # When one batch is downloaded twice
    first, second = _download(emu, batch_id), _download(emu, batch_id)
    # Then the lines come in different orders, each line the same byte for byte
    assert _ids(first) != _ids(second)
    assert sorted(first) == sorted(second)
    assert len(set(_ids(first))) == LINES
    # And even a batch of two lines comes in turns
    pair = client.messages.batches.create(requests=[req("x"), req("y")]).id
    wait_ended(client, pair)
    orders = [_ids(_download(emu, pair)) for _ in range(4)]
    assert all(one != two for one, two in pairwise(orders))


def test_random_order_repeats_for_the_same_seed_after_a_reset(client, emu) -> None:
    admin(emu, "POST", "config", {"results_order": "random", "seed": 9})
    first_run = [_ids(_download(emu, _ended_batch(client))) for _ in range(2)]
    admin(emu, "POST", "reset")
    second_run = [_ids(_download(emu, _ended_batch(client))) for _ in range(2)]
    assert first_run == second_run
    assert first_run[0] != first_run[1]


def _dead_base_url() -> str:
    """The address of a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_absolute_results_url_sends_the_sdk_to_the_other_host(client, emu) -> None:
    # Given results_url made absolute on a host that is not the emulator
    dead = _dead_base_url()
    admin(emu, "POST", "config", {"results_base_url": dead + "/"})
    batch = client.messages.batches.create(requests=[req("a"), req("b")])
    assert batch.results_url is None
    # When the batch has ended
    ended = wait_ended(client, batch.id)
    # Then results_url names the other host, on every endpoint that shows the batch
    expected = f"{dead}/v1/messages/batches/{batch.id}/results"
    assert ended.results_url == expected
    assert client.messages.batches.list().data[0].results_url == expected
    # And the SDK, which follows it as it is, cannot connect
    with pytest.raises(anthropic.APIConnectionError):
        list(client.messages.batches.results(batch.id))
    # While a client that fetches the path through its own base URL gets the results
    assert sorted(_ids(_download(emu, batch.id))) == ["a", "b"]
    assert emu.stats()["batches"][0]["results_downloads"] == 1


def test_absolute_results_url_on_the_emulators_own_host_works(client, emu) -> None:
    admin(emu, "POST", "config", {"results_base_url": emu.base_url})
    batch_id = _ended_batch(client)
    assert client.messages.batches.retrieve(batch_id).results_url == (
        f"{emu.base_url}/v1/messages/batches/{batch_id}/results"
    )
    assert len(list(client.messages.batches.results(batch_id))) == LINES


def test_results_base_url_is_validated(emu) -> None:
    for bad in ("ftp://example.com", "api.anthropic.com", "https://x/?q=1", 7):
        response = raw_http(emu, "POST", "/_emulator/config", {"results_base_url": bad})
        assert response.status == 400, bad
    response = raw_http(emu, "POST", "/_emulator/config", {"results_order": "sorted"})
    assert response.status == 400


def test_blocks_order_keeps_each_block_whole_and_moves_the_blocks_per_download(
    emulator_factory: Any,
) -> None:
    from batchline.emulator.results import block_order

    # Given results served in blocks of 4 lines, in a block order drawn per download
    emu = emulator_factory(
        "--processing-seconds", "0", "--results-order", "blocks", "--results-block-lines", "4"
    )
    client = sdk(emu)
    made = client.messages.batches.create(requests=[req(f"r{i}") for i in range(12)])
    wait_ended(client, made.id)
    downloads = [[r.custom_id for r in client.messages.batches.results(made.id)] for _ in range(3)]
    # Then every download has every line once, in the same three blocks of four
    blocks = [frozenset(d[i : i + 4]) for d in downloads for i in range(0, 12, 4)]
    assert all(sorted(d) == sorted(f"r{i}" for i in range(12)) for d in downloads)
    assert len(set(blocks)) == 3
    # And the blocks come in the order block_order draws for each download
    orders = [block_order(3, 0, k) for k in range(3)]
    assert len({tuple(o) for o in orders}) > 1  # the draws differ (seed 0)

    def block(download: list[str], position: int) -> frozenset[str]:
        return frozenset(download[4 * position : 4 * position + 4])

    def base(b: int) -> frozenset[str]:  # base block b, found where download 0 put it
        return block(downloads[0], orders[0].index(b))

    for k, download in enumerate(downloads):
        assert [block(download, i) for i in range(3)] == [base(b) for b in orders[k]]
