"""The emulator's plain logic, without a server: lifecycle, paging, limiter, faults, outcomes."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import orjson
import pytest

from batchline.emulator.batches import Batch, BatchStore, custom_ids_digest
from batchline.emulator.config import ConfigError, EmulatorConfig
from batchline.emulator.faults import FaultInjector
from batchline.emulator.outcomes import ERRORED, EXPIRED, SUCCEEDED, Evaluator, RequestRecord
from batchline.emulator.ratelimit import RateLimiter
from batchline.emulator.results import line_order, result_chunks
from batchline.emulator.wire import BatchIdFactory, key_id


def _records(count: int) -> list[RequestRecord]:
    return [RequestRecord(f"r{i}", SUCCEEDED, f"t{i}", "", "m", 1, 1, 0, 0) for i in range(count)]


def _batch(
    count: int = 10,
    processing_s: float = 10.0,
    batch_id: str = "msgbatch_01a",
    **options: Any,
) -> Batch:
    records = _records(count)
    return Batch(
        batch_id,
        records,
        created_at=1000.0,
        processing_s=processing_s,
        digest=custom_ids_digest(records),
        **options,
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
    assert batch.done_count() == 3
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


def test_requests_not_done_by_expiry_end_expired() -> None:
    batch = _batch(expiry_s=5.0)  # requests 0..4 done at 1001..1005
    assert batch.status(1004.9) == "in_progress"
    assert batch.status(1005.0) == "ended" and batch.ends_at == batch.expires_at == 1005.0
    counts = batch.counts(1005.0)
    assert (counts.succeeded, counts.expired, counts.canceled) == (5, 5, 0)
    lines = [orjson.loads(line) for line in b"".join(result_chunks(batch)).splitlines()]
    expired = {line["custom_id"] for line in lines if line["result"]["type"] == "expired"}
    assert expired == {f"r{i}" for i in range(5, 10)}
    assert batch.to_json(1005.0)["ended_at"] == batch.to_json(1005.0)["expires_at"]


def test_a_canceled_batch_never_ends_after_its_expiry() -> None:
    batch = _batch(expiry_s=5.0)
    batch.cancel(1004.5, canceling_s=3.0)
    assert batch.ends_at == 1005.0
    counts = batch.counts(1005.0)
    assert (counts.succeeded, counts.canceled, counts.expired) == (4, 6, 0)


def test_a_stalled_batch_ends_only_after_a_cancel() -> None:
    batch = _batch(expiry_s=5.0, stalled=True)
    assert batch.ends_at == math.inf
    assert batch.status(1_000_000.0) == "in_progress"
    store = BatchStore()
    store.add(batch)
    assert store.seconds_until_next_end(2000.0) == 0.0
    assert store.queued_requests(2000.0) == 10
    batch.cancel(2000.0, canceling_s=1.0)
    assert batch.status(2000.5) == "canceling"
    assert batch.status(2001.0) == "ended"
    assert batch.counts(2001.0).succeeded == 10  # every request was done by the cancel


def test_store_pages_one_workspace_without_hidden_batches() -> None:
    store = BatchStore()
    for i in range(8):
        store.add(_batch(batch_id=f"msgbatch_01{i:03d}", workspace="prod" if i % 2 else "dev"))
    prod = [f"msgbatch_01{i:03d}" for i in (7, 5, 3, 1)]
    page, more = store.page(limit=10, after_id=None, before_id=None, workspace="prod")
    assert [b.id for b in page] == prod and not more
    hidden = {prod[1]}
    page, more = store.page(limit=2, after_id=None, before_id=None, workspace="prod", hidden=hidden)
    assert [b.id for b in page] == [prod[0], prod[2]] and more
    page, more = store.page(
        limit=2, after_id=prod[2], before_id=None, workspace="prod", hidden=hidden
    )
    assert [b.id for b in page] == [prod[3]] and not more
    page, more = store.page(
        limit=1, after_id=None, before_id=prod[3], workspace="prod", hidden=hidden
    )
    assert [b.id for b in page] == [prod[2]] and more
    assert store.page(limit=5, after_id=None, before_id=None, workspace="none")[0] == []
    store.delete(prod[0])
    assert [
        b.id for b in store.page(limit=9, after_id=None, before_id=None, workspace="prod")[0]
    ] == prod[1:]


def test_line_orders() -> None:
    batch = _batch(count=20)
    assert line_order(batch, "request") == list(range(20))
    assert line_order(batch, "shuffled") == line_order(batch) != list(range(20))
    first = line_order(batch, "random", seed=1, download=0)
    assert sorted(first) == list(range(20))
    assert line_order(_batch(count=20), "random", seed=1, download=0) == first  # reproducible
    pair = _batch(count=2)
    orders = [line_order(pair, "random", seed=0, download=7) for _ in range(3)]
    assert orders[0] != orders[1] != orders[2]  # the same draw, turned so it differs


def test_key_id_is_a_short_sha256() -> None:
    assert key_id("sk-secret") == hashlib.sha256(b"sk-secret").hexdigest()[:12]
    assert key_id("sk-secret") != key_id("sk-secret2")


def test_workspaces_config_forms_and_errors() -> None:
    config = EmulatorConfig.from_mapping({"workspaces": " prod = k1,k2 ; staging=k3;"})
    assert config.workspaces == {"prod": ["k1", "k2"], "staging": ["k3"]}
    config.apply({"workspaces": {"a": ["k1"], "b": "k2, k3"}})
    assert config.workspaces == {"a": ["k1"], "b": ["k2", "k3"]}
    assert EmulatorConfig.from_mapping({"workspaces": ""}).workspaces == {}
    for bad in ("prod", "a=k1;a=k2", {"a": ["sk-dup"], "b": ["sk-dup"]}, {"": ["k"]}, ["a"]):
        with pytest.raises(ConfigError) as info:
            config.apply({"workspaces": bad})
        assert "sk-dup" not in str(info.value)
    assert config.workspaces == {"a": ["k1"], "b": ["k2", "k3"]}
