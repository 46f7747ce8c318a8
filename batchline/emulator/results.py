"""A batch's results as JSONL, one line per request, built and sent a chunk at a time."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import orjson

from batchline.emulator.batches import Batch
from batchline.emulator.outcomes import ECHO_PREFIX, ERRORED, EXPIRED, RequestRecord
from batchline.emulator.wire import derived_id

LINES_PER_CHUNK = 2000
_CANCELED = {"type": "canceled"}
_EXPIRED = {"type": "expired"}
_CUT_SHORT = {"canceled": _CANCELED, "expired": _EXPIRED}


def succeeded_message(batch_id: str, index: int, record: RequestRecord) -> dict[str, Any]:
    """The Message a succeeded request gets: its echo, with usage derived from its text."""
    return {
        "id": derived_id("msg", batch_id, str(index)),
        "type": "message",
        "role": "assistant",
        "model": record.model,
        "content": [{"type": "text", "text": ECHO_PREFIX + record.text, "citations": None}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": record.input_tokens,
            "cache_creation_input_tokens": record.cache_creation_tokens,
            "cache_read_input_tokens": record.cache_read_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": record.cache_creation_tokens,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_tokens": record.output_tokens,
            "service_tier": "batch",
        },
    }


def result_of(
    batch_id: str, index: int, record: RequestRecord, cut_short: str | None
) -> dict[str, Any]:
    """A request's result; cut_short ("canceled" or "expired") for one never processed."""
    if cut_short is not None:
        return _CUT_SHORT[cut_short]
    if record.outcome == ERRORED:
        return {
            "type": "errored",
            "error": {
                "type": "error",
                "error": {"type": record.error_type, "message": record.text},
                "request_id": derived_id("req", batch_id, str(index)),
            },
        }
    if record.outcome == EXPIRED:
        return _EXPIRED
    return {"type": "succeeded", "message": succeeded_message(batch_id, index, record)}


def block_order(blocks: int, seed: int, download: int) -> list[int]:
    """The order of a batch's blocks in the process's `download`-th results download."""
    order = list(range(blocks))
    random.Random(f"{seed}:{download}:blocks").shuffle(order)
    return order


def line_order(
    batch: Batch,
    mode: str = "shuffled",
    seed: int = 0,
    download: int = 0,
    block_lines: int = LINES_PER_CHUNK,
) -> list[int]:
    """The order of a download's lines (the API promises none).

    "shuffled": a shuffle fixed by the batch id; "request": the request order; "random": a
    shuffle drawn from the seed and the process's download number, never the order of the
    batch's previous random download (when it has two lines or more); "blocks": the fixed
    shuffle cut into blocks of `block_lines`, the blocks in an order drawn per download
    (block_order), as a store that keeps results in parts and serves them in any order."""
    order = list(range(batch.request_count))
    if mode == "request":
        return order
    if mode not in ("random", "blocks"):
        random.Random(batch.id).shuffle(order)
        return order
    if mode == "blocks":
        random.Random(batch.id).shuffle(order)
        blocks = [order[i : i + block_lines] for i in range(0, len(order), block_lines)]
        return [i for b in block_order(len(blocks), seed, download) for i in blocks[b]]
    random.Random(f"{seed}:{download}").shuffle(order)
    fingerprint = hash(tuple(order))
    if fingerprint == batch.last_random_order:
        order = order[1:] + order[:1]
        fingerprint = hash(tuple(order))
    batch.last_random_order = fingerprint
    return order


def result_chunks(
    batch: Batch, lines_per_chunk: int = LINES_PER_CHUNK, order: list[int] | None = None
) -> Iterator[bytes]:
    """JSONL chunks of whole lines in `order` (line_order's default when None), each line
    ending in a newline, none blank."""
    done = batch.done_count()
    cut_short = batch.cut_short()
    records = batch.records
    dumps = orjson.dumps
    pending: list[bytes] = []
    for index in line_order(batch) if order is None else order:
        record = records[index]
        line = {
            "custom_id": record.custom_id,
            "result": result_of(batch.id, index, record, cut_short if index >= done else None),
        }
        pending.append(dumps(line))
        if len(pending) >= lines_per_chunk:
            pending.append(b"")
            yield b"\n".join(pending)
            pending = []
    if pending:
        pending.append(b"")
        yield b"\n".join(pending)
