"""Turning a job's input into stored requests and chunks, streaming; a refusal leaves nothing.

With the job's cache on, a request identical (model and params) to one that already
succeeded is answered from the result cache, and repeats inside the job are sent once:
the first is the leader, the others follow its result.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from batchline import scripts as lua
from batchline.chunking import ENVELOPE_BYTES, TAG_BYTES, Chunker, new_tag
from batchline.errors import JobRefused, LineError
from batchline.pricing import BATCH_DISCOUNT, CHARS_PER_TOKEN, cost_nusd, price_for
from batchline.settings import ModelPrice
from batchline.sources import Item
from batchline.store import JobOptions, Store, make_record
from batchline.tables import RowWriter
from batchline.validation import Request, RowSpec, validate_stream
from batchline.wire import COMPRESS_LEVEL, dumps, pack_obj, unpack_obj

try:  # ISA-L's deflate: the same zlib streams, about 2.5 times faster at this level
    from isal.isal_zlib import compress as _compress
except ImportError:  # pragma: no cover - isal is a dependency; zlib does the same, slower
    from zlib import compress as _compress

FLUSH_EVERY = 1000
MAX_KEPT_ERRORS = 10_000
CACHE_CHUNK = "cache"  # pseudo chunk whose done-set holds the requests answered from the cache


def request_blob(req: Request) -> bytes:
    """What is stored per request: a header line (input line, params key), then the wire form,
    compressed (a zlib stream, as wire.pack makes)."""
    return _compress(b"%d %s\n" % (req.line, req.params_key.encode()) + req.wire, COMPRESS_LEVEL)


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
    cache_hits: int = 0
    deduplicated: int = 0
    saved_nusd: int = 0
    hook_marks: list[str] = field(default_factory=list)
    table: dict[str, Any] | None = None  # a table job's shape (batchline.tables.RowWriter)


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
        self.pending: list[Request] = []
        self.result = IngestResult()
        self.chunk_sizes: dict[int, list[int]] = {}  # chunk -> [count, body bytes]
        self.chunk_numbers: list[int] = []
        self.on_flush = on_flush
        self._prices: dict[str, ModelPrice | None] = {}

    def run(self, items: Iterable[tuple[int, Item]]) -> IngestResult:
        s = self.store.settings
        o = self.options
        rows = None
        if o.table:
            rows = RowSpec.build(o.template, o.system_template, o.id_column)
            writer = RowWriter(self.store, self.job_id)
            items = writer.tee(items)
        elif o.id_column is not None:
            rows = RowSpec.build(None, None, o.id_column)
        for entry in validate_stream(items, o.defaults, s.max_request_bytes, rows):
            if isinstance(entry, LineError):
                self._reject(entry)
            else:
                self.pending.append(entry)
                if len(self.pending) >= FLUSH_EVERY:
                    self._flush()
        self._flush()
        if o.table:
            self.result.table = writer.close()
        self.result.rejected.sort(key=lambda e: e.line)
        self._write_chunks()
        return self.result

    def _reject(self, err: LineError) -> None:
        self.result.rejected_count += 1
        if len(self.result.rejected) < MAX_KEPT_ERRORS:
            self.result.rejected.append(err)

    def _flush(self) -> None:
        reqs, self.pending = self.pending, []
        if not reqs:
            return
        # 1. Store each request once; its custom_id claims the slot (a repeat is refused).
        # One script call for the whole flush: far cheaper than a command per request.
        args: list[str | bytes] = []
        for req in reqs:
            args += (req.api_id, request_blob(req), req.custom_id if req.mapped else "")
        created = lua.STORE_REQUESTS(
            self.store.r,
            lua.StoreRequestsKeys(self.keys.requests, self.keys.original_ids),
            lua.NoArgs(),
            args,
        )
        if self.on_flush is not None:
            self.on_flush()
        fresh: list[Request] = []
        for req, stored in zip(reqs, created, strict=True):
            if stored:
                fresh.append(req)
            else:
                self._duplicate_id(req)
        self.result.accepted += len(fresh)
        # 2. The cache and repeats inside the job.
        to_send = self._deduplicate(fresh) if self.options.cache else fresh
        # 3. Cut what must be sent into chunks: one RPUSH per chunk the flush touches.
        pipe = self.store.r.pipeline(transaction=False)
        chunker = self.chunker
        ids: list[str] = []
        number = chunker.number
        cost = self.result.estimated_cost_usd  # summed in input order, as ever
        for req in to_send:
            size = len(req.wire) + TAG_BYTES  # as sent: the chunk's tag after the custom_id
            chunker.add(size)
            if chunker.number != number:
                if ids:
                    pipe.rpush(self.keys.chunk(number).ids, *ids)
                    ids = []
                number = chunker.number
            if number not in self.chunk_sizes:
                # Written before the chunk's first id, so a redelivered submit finds and
                # removes every chunk a crashed ingest began (see Store.delete_job).
                pipe.hset(self.keys.job, "ingest_chunks", number + 1)
            sizes = self.chunk_sizes.setdefault(number, [0, ENVELOPE_BYTES])
            sizes[1] += size + (1 if sizes[0] else 0)
            sizes[0] += 1
            ids.append(req.api_id)
            cost += self._estimate(req)
        if ids:
            pipe.rpush(self.keys.chunk(number).ids, *ids)
        self.result.estimated_cost_usd = cost
        pipe.execute()

    def _estimate(self, req: Request) -> float:
        """pricing.estimate_cost_usd, with the model's price looked up once per job."""
        try:
            price = self._prices[req.model]
        except KeyError:
            price = self._prices[req.model] = price_for(self.store.settings, req.model)
        if price is None:
            return 0.0
        tokens_in = req.prompt_chars / CHARS_PER_TOKEN + 8
        return (
            (tokens_in * price.input + req.max_tokens * price.output) * BATCH_DISCOUNT / 1_000_000
        )

    def _duplicate_id(self, req: Request) -> None:
        first = self.store.r.hget(self.keys.requests, req.api_id)
        first_line = blob_header(first)[0] if first else "?"
        self._reject(
            LineError(
                req.line,
                f"duplicate custom_id {req.custom_id!r} (first on line {first_line})",
                req.custom_id,
            )
        )

    def _deduplicate(self, reqs: list[Request]) -> list[Request]:
        """Answer cache hits now, attach repeats to their leader; return what must be sent."""
        r = self.store.r
        scope = self.options.cache_scope
        pipe = r.pipeline(transaction=False)
        for req in reqs:
            pipe.get(self.store.fleet.result_cache(scope, req.params_key))
            pipe.hsetnx(self.keys.leaders, req.params_key, req.api_id)
            pipe.hget(self.keys.leaders, req.params_key)
        replies = pipe.execute()
        send: list[Request] = []
        hits: list[tuple[Request, bytes]] = []
        followers: dict[str, list[str]] = defaultdict(list)
        for i, req in enumerate(reqs):
            cached, is_leader, leader = replies[3 * i : 3 * i + 3]
            if cached is not None:
                hits.append((req, cached))
            elif is_leader:
                send.append(req)
            else:
                followers[leader.decode()].append(req.api_id)
        if hits:
            self._answer_from_cache(hits)
        for leader, ids in followers.items():
            lua.APPEND_FIELD(
                self.store.r,
                lua.HashKey(self.keys.followers),
                lua.AppendFieldArgs(leader, ",".join(ids) + ","),
            )
            self.result.deduplicated += len(ids)
        return send

    def _answer_from_cache(self, hits: list[tuple[Request, bytes]]) -> None:
        """Record cached answers (the job's counters are written when the job is)."""
        settings = self.store.settings
        pipe = self.store.r.pipeline(transaction=False)
        done = self.keys.chunk(CACHE_CHUNK).done
        for req, blob in hits:
            message = unpack_obj(blob)
            rec = make_record(req.custom_id, "succeeded", 0, req.line, message=message, cached=True)
            pipe.hset(self.keys.records, req.api_id, pack_obj(rec))
            pipe.hdel(self.keys.requests, req.api_id)
            pipe.sadd(done, req.api_id)
            model = str(message.get("model") or "")
            self.result.saved_nusd += cost_nusd(settings, model, message.get("usage") or {})
            if self.options.on_result:
                self.result.hook_marks.append(req.api_id)
        pipe.execute()
        self.result.cache_hits += len(hits)

    def _write_chunks(self) -> None:
        now = self.store.redis_now()  # one clock with the create's window (see durability)
        pipe = self.store.r.pipeline(transaction=False)
        numbers = [n for n in sorted(self.chunk_sizes) if self.chunk_sizes[n][0] > 0]
        tags = {n: new_tag() for n in numbers}
        self.store.register_tags(pipe, {tags[n]: f"{self.job_id}:{n}" for n in numbers})
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
                    "tag": tags[n],
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
            rec = make_record(
                err.custom_id or f"line-{err.line}",
                "rejected",
                0,
                err.line,
                error={"type": "rejected", "message": err.reason},
            )
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
    table = {"table": dumps(result.table)} if result.table is not None else {}
    return {
        **table,
        "state": "pending",
        "options": options.to_json(),
        "total": result.accepted + result.rejected_count,
        "accepted": result.accepted,
        "rejected": result.rejected_count,
        "succeeded": result.cache_hits,
        "cache_hits": result.cache_hits,
        "deduplicated": result.deduplicated,
        "saved_nusd": result.saved_nusd,
        "open_chunks": result.chunks,
        "chunk_seq": result.chunks,
        "estimated_cost_usd": round(result.estimated_cost_usd, 6),
        "metadata": dumps(options.metadata),
        "submitted_at": now,
    }
