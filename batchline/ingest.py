"""Turning a job's input into stored requests and chunks, streaming; a refusal leaves nothing."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from batchline.chunking import ENVELOPE_BYTES, Chunker
from batchline.errors import JobRefused, LineError
from batchline.pricing import estimate_cost_usd
from batchline.sources import Item
from batchline.store import JobOptions, Store
from batchline.validation import Request, validate_stream
from batchline.wire import dumps, pack, pack_obj

FLUSH_EVERY = 1000
MAX_KEPT_ERRORS = 10_000


def request_blob(req: Request) -> bytes:
    """What is stored per request: a header line (input line, params key), then the wire form."""
    return pack(b"%d %s\n" % (req.line, req.params_key.encode()) + req.wire)


def blob_header(blob: bytes) -> tuple[int, str]:
    """(input line, params key) from a stored request, decompressing only the header."""
    head = zlib.decompressobj().decompress(blob, 128)
    line, key = head.split(b"\n", 1)[0].split(b" ", 1)
    return int(line), key.decode()


def blob_wire(blob: bytes) -> bytes:
    """The request exactly as sent to the API."""
    return zlib.decompress(blob).split(b"\n", 1)[1]


@dataclass
class IngestResult:
    accepted: int = 0
    rejected: list[LineError] = field(default_factory=list)
    rejected_count: int = 0
    chunks: int = 0
    estimated_cost_usd: float = 0.0
    deduplicated: int = 0


@dataclass
class _Pending:
    req: Request
    chunk: int


class Ingest:
    """Writes validated requests of one job into Redis and cuts them into chunks."""

    def __init__(
        self,
        store: Store,
        job_id: str,
        options: JobOptions,
        on_flush: Callable[[], object] | None = None,
    ):
        self.store = store
        self.job_id = job_id
        self.options = options
        self.keys = store.keys(job_id)
        s = store.settings
        self.chunker = Chunker(s.max_batch_requests, s.max_batch_bytes)
        self.pipe = store.r.pipeline(transaction=False)
        self.pending: list[_Pending] = []
        self.result = IngestResult()
        self.chunk_sizes: dict[int, list[int]] = {}  # chunk -> [count, bytes]
        self.chunk_numbers: list[int] = []
        self.on_flush = on_flush

    def run(self, items: Iterable[tuple[int, Item]]) -> IngestResult:
        s = self.store.settings
        for entry in validate_stream(items, self.options.defaults, s.max_request_bytes):
            if isinstance(entry, LineError):
                self._reject(entry)
            else:
                self._accept(entry)
        self._flush()
        self.result.rejected.sort(key=lambda e: e.line)
        self._write_chunks()
        return self.result

    def _reject(self, err: LineError) -> None:
        self.result.rejected_count += 1
        if len(self.result.rejected) < MAX_KEPT_ERRORS:
            self.result.rejected.append(err)

    def _accept(self, req: Request) -> None:
        self.chunker.add(len(req.wire))
        number = self.chunker.number
        sizes = self.chunk_sizes.setdefault(number, [0, ENVELOPE_BYTES])
        sizes[1] += len(req.wire) + (1 if sizes[0] else 0)
        sizes[0] += 1
        self.pipe.hsetnx(self.keys.requests, req.api_id, request_blob(req))
        self.pipe.rpush(self.keys.chunk(number).ids, req.api_id)
        if req.mapped:
            self.pipe.hset(self.keys.original_ids, req.api_id, req.custom_id)
        self.pending.append(_Pending(req, number))
        self.result.accepted += 1
        self.result.estimated_cost_usd += estimate_cost_usd(
            self.store.settings, req.model, req.prompt_chars, req.max_tokens
        )
        if len(self.pending) >= FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        replies = self.pipe.execute()
        if self.on_flush is not None:
            self.on_flush()
        i = 0
        for p in self.pending:
            created = replies[i]
            i += 2 + (1 if p.req.mapped else 0)
            if not created:
                self._duplicate(p)
        self.pending = []

    def _duplicate(self, p: _Pending) -> None:
        r = self.store.r
        first = r.hget(self.keys.requests, p.req.api_id)
        first_line = blob_header(first)[0] if first else "?"  # type: ignore[arg-type]
        r.lrem(self.keys.chunk(p.chunk).ids, -1, p.req.api_id)
        self.chunk_sizes[p.chunk][0] -= 1
        self.chunk_sizes[p.chunk][1] -= len(p.req.wire) + 1
        self.result.accepted -= 1
        self._reject(
            LineError(
                p.req.line,
                f"duplicate custom_id {p.req.custom_id!r} (first on line {first_line})",
                p.req.custom_id,
            )
        )

    def _write_chunks(self) -> None:
        now = self.store.now()
        pipe = self.store.r.pipeline(transaction=False)
        numbers = [n for n in sorted(self.chunk_sizes) if self.chunk_sizes[n][0] > 0]
        for n in numbers:
            count, body = self.chunk_sizes[n]
            pipe.hset(
                self.keys.chunk(n).meta,
                mapping={
                    "state": "pending",
                    "attempt": 1,
                    "count": count,
                    "bytes": body,
                    "processed": 0,
                    "made_at": now,
                    "touched_at": now,
                    "kind": "first",
                },
            )
        if numbers:
            pipe.rpush(self.keys.chunks, *numbers)
        pipe.execute()
        self.result.chunks = len(numbers)
        self.chunk_numbers = numbers

    def rejected_records(self) -> None:
        """Store a `rejected` record per refused line (when the job accepts the valid ones)."""
        pipe = self.store.r.pipeline(transaction=False)
        for err in self.result.rejected:
            rec = {
                "custom_id": err.custom_id or f"line-{err.line}",
                "state": "rejected",
                "attempts": 0,
                "line": err.line,
                "error": {"type": "rejected", "message": err.reason},
            }
            pipe.hset(self.keys.records, f"!{err.line}", pack_obj(rec))
        pipe.execute()


def fingerprint(options: JobOptions, input_hash: str) -> str:
    return hashlib.sha256(options.canonical() + b"\n" + input_hash.encode()).hexdigest()


def refuse(
    store: Store, job_id: str, ingest: Ingest, message: str, errors: list[LineError] | None = None
) -> JobRefused:
    """Remove everything the ingest wrote and build the refusal."""
    store.delete_job(job_id, chunk_count=ingest.chunker.number + 1)
    return JobRefused(message, errors)


def job_fields(options: JobOptions, result: IngestResult, now: float) -> dict[str, Any]:
    return {
        "state": "pending",
        "options": options.to_json(),
        "total": result.accepted + result.rejected_count,
        "accepted": result.accepted,
        "rejected": result.rejected_count,
        "succeeded": 0,
        "failed": 0,
        "canceled": 0,
        "open_chunks": result.chunks,
        "chunk_seq": result.chunks,
        "estimated_cost_usd": round(result.estimated_cost_usd, 6),
        "metadata": dumps(options.metadata),
        "submitted_at": now,
    }
