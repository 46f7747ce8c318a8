"""Chunk cutting, result classification and batch pricing."""

from __future__ import annotations

from batchline.chunking import ENVELOPE_BYTES, Chunker, body_size
from batchline.classify import classify_result, decide
from batchline.pricing import cost_nusd, estimate_cost_usd, price_for
from batchline.settings import Settings


def cut(sizes: list[int], max_requests: int, max_bytes: int) -> list[list[int]]:
    chunker = Chunker(max_requests, max_bytes)
    chunks: list[list[int]] = []
    for s in sizes:
        if chunker.add(s) or not chunks:
            chunks.append([])
        chunks[-1].append(s)
        assert chunker.body_bytes == body_size(chunks[-1])
    return chunks


def test_chunks_respect_request_count() -> None:
    assert [len(c) for c in cut([10] * 3500, 1000, 10**9)] == [1000, 1000, 1000, 500]


def test_chunks_respect_body_bytes_exactly() -> None:
    limit = ENVELOPE_BYTES + 3 * 100 + 2  # exactly three 100-byte requests and two commas
    chunks = cut([100] * 7, 1000, limit)
    assert [len(c) for c in chunks] == [3, 3, 1]
    assert all(body_size(c) <= limit for c in chunks)


def test_a_request_alone_always_fits_an_empty_chunk() -> None:
    assert [len(c) for c in cut([5000, 10], 10, 100)] == [1, 1]


def err(kind: str) -> dict[str, object]:
    return {
        "type": "errored",
        "error": {"type": "error", "error": {"type": kind, "message": "m"}, "request_id": "req_1"},
    }


def test_classification_reads_the_doubly_nested_error_type() -> None:
    assert classify_result({"type": "succeeded", "message": {"id": "msg"}}).kind == "succeeded"
    for kind in ("api_error", "overloaded_error", "rate_limit_error", "timeout_error"):
        out = classify_result(err(kind))
        assert (out.kind, out.error and out.error["type"]) == ("retry", kind)
    for kind in (
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "billing_error",
        "not_found_error",
    ):
        assert classify_result(err(kind)).kind == "failed"
    assert classify_result({"type": "expired"}).kind == "retry"
    assert classify_result({"type": "canceled"}).kind == "retry"
    assert classify_result({"type": "mystery"}).kind == "failed"
    assert classify_result(None).kind == "failed"


def test_decide_applies_attempts_and_cancellation() -> None:
    retry = classify_result(err("api_error"))
    assert decide(retry, attempts=1, max_attempts=3, job_canceled=False).kind == "retry"
    assert decide(retry, attempts=3, max_attempts=3, job_canceled=False).kind == "failed"
    assert decide(retry, attempts=1, max_attempts=3, job_canceled=True).kind == "canceled"
    canceled = classify_result({"type": "canceled"})
    assert decide(canceled, attempts=1, max_attempts=3, job_canceled=True).kind == "canceled"
    ok = classify_result({"type": "succeeded", "message": {}})
    assert decide(ok, attempts=3, max_attempts=3, job_canceled=True).kind == "succeeded"


def test_batch_price_is_half_with_cache_tokens() -> None:
    s = Settings()
    assert price_for(s, "claude-haiku-4-5-20251001") == s.prices["claude-haiku-4-5"]
    assert price_for(s, "claude-opus-4-1-2025") == s.prices["claude-opus-4-1"]
    assert price_for(s, "gpt-4") is None
    usage = {
        "input_tokens": 1_000_000,
        "output_tokens": 1_000_000,
        "cache_creation_input_tokens": 1_000_000,
        "cache_read_input_tokens": 1_000_000,
    }
    # haiku 4.5: (1 + 5 + 1.25 + 0.1) USD at full price, half at batch price
    assert cost_nusd(s, "claude-haiku-4-5", usage) == round(3.675 * 1e9)
    assert cost_nusd(s, "unknown-model", usage) == 0
    assert estimate_cost_usd(s, "claude-haiku-4-5", 3500, 1000) > 0.0025
