"""The emulator's plain logic, without a server: lifecycle, paging, limiter, faults, outcomes."""

from __future__ import annotations

import orjson
import pytest

from batchline.emulator.batches import Batch, BatchStore, custom_ids_digest
from batchline.emulator.config import ConfigError, EmulatorConfig
from batchline.emulator.faults import FaultInjector
from batchline.emulator.outcomes import ERRORED, EXPIRED, SUCCEEDED, Evaluator, RequestRecord
from batchline.emulator.ratelimit import RateLimiter
from batchline.emulator.results import result_chunks
from batchline.emulator.wire import BatchIdFactory


def _records(count: int) -> list[RequestRecord]:
    return [RequestRecord(f"r{i}", SUCCEEDED, f"t{i}", "", "m", 1, 1, 0, 0) for i in range(count)]


def _batch(count: int = 10, processing_s: float = 10.0, batch_id: str = "msgbatch_01a") -> Batch:
    records = _records(count)
    return Batch(
        batch_id,
        records,
        created_at=1000.0,
        processing_s=processing_s,
        digest=custom_ids_digest(records),
    )


def test_batch_ends_after_the_processing_time() -> None:
    batch = _batch()
    assert batch.status(1009.9) == "in_progress"
    assert batch.counts(1009.9).processing == 10
    assert batch.to_json(1009.9)["results_url"] is None
    assert batch.status(1010.0) == "ended"
    assert batch.counts(1010.0).succeeded == 10
    assert batch.to_json(1010.0)["results_url"] == "/v1/messages/batches/msgbatch_01a/results"


def test_cancel_keeps_requests_done_before_it() -> None:
    batch = _batch()
    batch.cancel(1003.5, canceling_s=1.0)  # requests 0..2 done at 1001, 1002, 1003
    assert batch.status(1004.0) == "canceling"
    assert batch.status(1004.5) == "ended"
    assert batch.done_before_cancel() == 3
    counts = batch.counts(1004.5)
    assert (counts.succeeded, counts.canceled, counts.processing) == (3, 7, 0)


def test_batch_ids_sort_by_creation() -> None:
    factory = BatchIdFactory()
    ids = [factory.new() for _ in range(200)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 200
    assert all(len(batch_id) == len("msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d") for batch_id in ids)


def test_store_pages_both_ways_and_survives_a_deleted_cursor() -> None:
    store = BatchStore()
    ids = [f"msgbatch_01{i:03d}" for i in range(7)]
    for batch_id in ids:
        store.add(_batch(batch_id=batch_id))
    page, more = store.page(limit=3, after_id=None, before_id=None)
    assert [b.id for b in page] == ids[6:3:-1] and more
    store.delete(ids[4])
    page, more = store.page(limit=3, after_id=ids[4], before_id=None)
    assert [b.id for b in page] == [ids[3], ids[2], ids[1]] and more
    page, more = store.page(limit=3, after_id=None, before_id=ids[4])
    assert [b.id for b in page] == [ids[6], ids[5]] and not more


def test_rate_limiter_slides_its_window() -> None:
    limiter = RateLimiter(window_s=60)
    assert limiter.try_acquire(2, 0.0) is None
    assert limiter.try_acquire(2, 10.0) is None
    assert limiter.try_acquire(2, 20.0) == pytest.approx(40.0)
    assert limiter.headers(2, 20.0)["anthropic-ratelimit-requests-remaining"] == "0"
    assert limiter.try_acquire(2, 60.0) is None  # the call at 0.0 has left the window
    assert limiter.try_acquire(2, 61.0) == pytest.approx(9.0)


def test_fault_injector_order_and_seeded_randomness() -> None:
    config = EmulatorConfig.from_mapping(
        {"fail_next": [{"endpoint": "retrieve", "status": 500}], "lost_create_next": 1}
    )
    faults = FaultInjector(config)
    assert faults.pick("list") is None
    lost = faults.pick("create")
    assert lost is not None and lost.kind == "lost"
    failed = faults.pick("retrieve")
    assert failed is not None and (failed.kind, failed.status) == ("status", 500)
    assert faults.pick("create") is None
    config.apply({"error_rate": 0.5, "seed": 4})
    faults.reseed()
    first = [faults.pick("list") for _ in range(50)]
    faults.reseed()
    assert [faults.pick("list") for _ in range(50)] == first
    assert 0 < sum(fault is not None for fault in first) < 50


def test_config_rejects_unknown_keys_and_changes_nothing_on_error() -> None:
    config = EmulatorConfig()
    with pytest.raises(ConfigError):
        config.apply({"rpm_limit": 5, "drop_rate": 3})
    assert config.rpm_limit == 0
    with pytest.raises(ConfigError):
        config.apply({"rpm": 5})
    assert config.apply({"api_keys": "a, b", "error_statuses": "500, 503"}) == {
        "api_keys",
        "error_statuses",
    }
    assert config.api_keys == ["a", "b"] and config.error_statuses == [500, 503]


def _params(text: str, **extra: object) -> dict[str, object]:
    return {
        "model": "m",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def test_evaluator_outcomes_and_once_registry() -> None:
    once: set[bytes] = set()
    evaluator = Evaluator(strict=True, once_seen=once, cache_seen=set())
    assert evaluator.evaluate("a", _params("hi")).outcome == SUCCEEDED
    assert evaluator.evaluate("b", _params("[[emulate:expired]]")).outcome == EXPIRED
    errored = evaluator.evaluate("c", _params("[[emulate:errored:api_error]]"))
    assert (errored.outcome, errored.error_type) == (ERRORED, "api_error")
    assert evaluator.evaluate("d", _params("x", top_k=3)).error_type == "invalid_request_error"
    once_params = _params("[[emulate:errored-once:api_error]]")
    assert evaluator.evaluate("e", once_params).outcome == ERRORED
    assert once == set()  # nothing is remembered before the create is accepted
    evaluator.commit()
    later = Evaluator(strict=False, once_seen=once, cache_seen=set())
    assert later.evaluate("e", once_params).outcome == SUCCEEDED
    assert later.evaluate("d", _params("x", top_k=3)).outcome == SUCCEEDED


def test_result_chunks_are_whole_lines_with_none_blank() -> None:
    batch = _batch(count=25, processing_s=0)
    chunks = list(result_chunks(batch, lines_per_chunk=10))
    assert len(chunks) == 3
    assert all(chunk.endswith(b"\n") for chunk in chunks)
    lines = b"".join(chunks).split(b"\n")
    assert lines[-1] == b""
    parsed = [orjson.loads(line) for line in lines[:-1]]
    assert sorted(p["custom_id"] for p in parsed) == sorted(f"r{i}" for i in range(25))
    # the order is not the request order, but the same every time
    assert [p["custom_id"] for p in parsed] != [f"r{i}" for i in range(25)]
    assert b"".join(result_chunks(batch, lines_per_chunk=7)) == b"".join(chunks)
