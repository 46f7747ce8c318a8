"""The Message Batches endpoints: create, retrieve, list, cancel, delete and results."""

from __future__ import annotations

import asyncio

from aiohttp import web

from batchline.emulator.batches import ENDED, IN_PROGRESS, Batch, custom_ids_digest
from batchline.emulator.intake import evaluate_requests, gc_paused, parse_requests, read_body
from batchline.emulator.outcomes import Evaluator, strict_sampling
from batchline.emulator.pipeline import caller_of, workspace_of_call
from batchline.emulator.ratelimit import retry_after_header
from batchline.emulator.results import LINES_PER_CHUNK, line_order, result_chunks
from batchline.emulator.state import EmulatorState
from batchline.emulator.wire import ApiError, json_response

UNKNOWN_RESULT_LINE = (
    b'{"custom_id":"never-submitted","result":{"type":"errored","error":{"type":"error",'
    b'"error":{"type":"not_found_error","message":"no such request"},"request_id":"req_x"}}}\n'
)

DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 1000
RESULTS_CONTENT_TYPE = "application/x-jsonl"


def _not_found(batch_id: str) -> ApiError:
    return ApiError(404, f"message batch {batch_id!r} not found")


def _batch(request: web.Request, state: EmulatorState) -> Batch:
    """The batch named in the path; another workspace's or a hidden one is unknown too."""
    batch_id = request.match_info["batch_id"]
    batch = state.store.get(batch_id)
    if batch is None or not state.visible(batch, workspace_of_call(request)):
        raise _not_found(batch_id)
    return batch


def _batch_json(state: EmulatorState, batch: Batch, now: float) -> web.Response:
    return json_response(batch.to_json(now, state.config.results_base_url))


async def create(request: web.Request, state: EmulatorState) -> web.StreamResponse:
    config = state.config
    body = await read_body(request, config.max_body_bytes)
    with gc_paused():
        requests = parse_requests(body, config.max_requests)
    del body
    if config.queue_limit:
        now = state.clock()
        queued = state.store.queued_requests(now)
        if queued + len(requests) > config.queue_limit:
            state.stats.rate_limited += 1
            state.stats.queue_limited += 1
            raise ApiError(
                429,
                f"This batch of {len(requests)} requests would put {queued + len(requests)} "
                f"requests in the processing queue, over the limit of {config.queue_limit}",
                headers={
                    "retry-after": retry_after_header(
                        state.store.seconds_until_next_end(now), minimum_s=1
                    )
                },
            )
    evaluator = Evaluator(
        strict=strict_sampling(request.headers.get("anthropic-version")),
        once_seen=state.once_seen,
        cache_seen=state.cache_seen,
    )
    with gc_paused():
        records = evaluate_requests(requests, evaluator)
    del requests
    evaluator.commit()
    now = state.clock()
    caller = caller_of(request)
    stalled = config.stall_next_create > 0
    if stalled:
        config.stall_next_create -= 1
    batch = Batch(
        state.ids.new(),
        records,
        created_at=now,
        processing_s=config.processing_seconds,
        digest=custom_ids_digest(records),
        expiry_s=config.expiry_seconds,
        key_id=caller.key_id or "",
        workspace=workspace_of_call(request),
        stalled=stalled,
    )
    state.store.add(batch)
    state.stats.record_batch(batch.key_id, len(records))
    return _batch_json(state, batch, now)


async def retrieve(request: web.Request, state: EmulatorState) -> web.StreamResponse:
    batch = _batch(request, state)
    batch.retrieves += 1
    first_look = not batch.retrieved
    batch.retrieved = True
    if first_look and state.config.transient_404:
        state.stats.record_fault("transient_404")
        raise _not_found(batch.id)
    return _batch_json(state, batch, state.clock())


def _list_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIST_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(400, f"limit: Input should be a valid integer, got {raw!r}") from None
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ApiError(400, f"limit: Input should be between 1 and {MAX_LIST_LIMIT}, got {limit}")
    return limit


async def list_batches(request: web.Request, state: EmulatorState) -> web.StreamResponse:
    query = request.query
    limit = _list_limit(query.get("limit"))
    after_id = query.get("after_id") or None
    before_id = query.get("before_id") or None
    if after_id and before_id:
        raise ApiError(400, "after_id and before_id cannot be used together")
    batches, has_more = state.store.page(
        limit=limit,
        after_id=after_id,
        before_id=before_id,
        workspace=workspace_of_call(request),
        hidden=set(state.config.hidden_batches),
    )
    now = state.clock()
    base_url = state.config.results_base_url
    return json_response(
        {
            "data": [batch.to_json(now, base_url) for batch in batches],
            "has_more": has_more,
            "first_id": batches[0].id if batches else None,
            "last_id": batches[-1].id if batches else None,
        }
    )


async def cancel(request: web.Request, state: EmulatorState) -> web.StreamResponse:
    batch = _batch(request, state)
    batch.cancel_requested = True
    now = state.clock()
    status = batch.status(now)
    if status == ENDED:
        raise ApiError(400, f"message batch {batch.id!r} has already ended and cannot be canceled")
    if status == IN_PROGRESS:
        batch.cancel(now, state.config.canceling_seconds)
    return _batch_json(state, batch, now)


async def delete(request: web.Request, state: EmulatorState) -> web.StreamResponse:
    batch = _batch(request, state)
    if batch.status(state.clock()) != ENDED:
        raise ApiError(
            400,
            f"message batch {batch.id!r} is still processing: "
            "cancel it and wait for it to end before deleting it",
        )
    state.store.delete(batch.id)
    return json_response({"id": batch.id, "type": "message_batch_deleted"})


async def results(request: web.Request, state: EmulatorState) -> web.StreamResponse:
    batch = _batch(request, state)
    if batch.status(state.clock()) != ENDED:
        raise ApiError(
            400, f"message batch {batch.id!r} is still processing: its results are not ready"
        )
    config = state.config
    truncate = config.truncate_results_next > 0
    if truncate:
        config.truncate_results_next -= 1
    unknown = config.unknown_results_next > 0
    if unknown:
        config.unknown_results_next -= 1
    order = line_order(
        batch,
        config.results_order,
        config.seed,
        state.next_download(),
        config.results_block_lines,
    )
    response = web.StreamResponse(status=200)
    response.content_type = RESULTS_CONTENT_TYPE
    await response.prepare(request)
    batch.results_downloads += 1
    try:
        if unknown:
            state.stats.record_fault("unknown_results_next")
            await response.write(UNKNOWN_RESULT_LINE)
        lines_per_chunk = max(1, batch.request_count // 2) if truncate else LINES_PER_CHUNK
        rate = config.results_lines_per_s
        if rate:  # a tenth of a second's worth of lines at a time
            lines_per_chunk = min(lines_per_chunk, max(1, int(rate / 10)))
        for chunk in result_chunks(batch, lines_per_chunk, order):
            await response.write(chunk)
            if rate:
                await asyncio.sleep(lines_per_chunk / rate)
            if truncate:  # cut the stream after the first half of the lines
                state.stats.record_fault("truncate_results_next")
                if request.transport is not None:  # flush what was written, then hang up
                    request.transport.close()
                return response
        await response.write_eof()
    except ConnectionError:
        pass  # the client stopped reading: nothing left to send it
    return response
