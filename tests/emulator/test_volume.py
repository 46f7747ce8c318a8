"""A larger batch end to end: every request answered once, results streamed in many chunks."""

from __future__ import annotations

from tests.emulator.conftest import req, wait_ended

REQUESTS = 5000  # more than two chunks of result lines


def test_thousands_of_requests_each_get_their_own_result(client, emu) -> None:
    batch = client.messages.batches.create(
        requests=[req(f"item-{i}", f"prompt number {i}") for i in range(REQUESTS)]
    )
    ended = wait_ended(client, batch.id)
    assert ended.request_counts.succeeded == REQUESTS
    seen: dict[str, str] = {}
    for line in client.messages.batches.results(batch.id):
        assert line.custom_id not in seen
        seen[line.custom_id] = line.result.message.content[0].text
    assert len(seen) == REQUESTS
    assert all(text == f"echo: prompt number {cid[5:]}" for cid, text in seen.items())
    assert emu.stats()["requests_received"] == REQUESTS


def test_a_client_that_stops_reading_results_early_does_no_harm(client, emu) -> None:
    batch = client.messages.batches.create(
        requests=[req(f"item-{i}", "x" * 2000) for i in range(REQUESTS)]
    )
    wait_ended(client, batch.id)
    results = client.messages.batches.results(batch.id)
    next(iter(results))
    results.close()
    assert client.messages.batches.retrieve(batch.id).id == batch.id
    assert "Traceback" not in emu.log.read_text()
