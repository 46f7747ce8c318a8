"""What every batch-endpoint call goes through before its handler: latency, auth, limits, faults."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from batchline.emulator.callers import Caller, identify, refusal
from batchline.emulator.faults import Fault
from batchline.emulator.intake import drain
from batchline.emulator.ratelimit import retry_after_header
from batchline.emulator.state import STATE, EmulatorState
from batchline.emulator.stats import DROPPED
from batchline.emulator.wire import ApiError, error_response, http_date, new_request_id

REQUEST_ID = "batchline_emulator_request_id"
ENDPOINT = "batchline_emulator_endpoint"
CALLER = "batchline_emulator_caller"

Handler = Callable[[web.Request, EmulatorState], Awaitable[web.StreamResponse]]
AiohttpHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConnectionDropped(Exception):
    """Raised to close the client's connection without an answer."""


def request_id_of(request: web.Request) -> str:
    request_id = request.get(REQUEST_ID)
    if request_id is None:
        request_id = request[REQUEST_ID] = new_request_id()
    return str(request_id)


def caller_of(request: web.Request) -> Caller:
    """Who made this call (set once its key has been checked)."""
    caller = request[CALLER]
    assert isinstance(caller, Caller)
    return caller


def workspace_of_call(request: web.Request) -> str:
    """The workspace of an accepted call: a handler only runs for those."""
    workspace = caller_of(request).workspace
    assert workspace is not None
    return workspace


def batch_endpoint(endpoint: str, handler: Handler) -> AiohttpHandler:
    """Wrap a handler in the checks and faults all batch endpoints share; record the call."""

    async def serve(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        request[ENDPOINT] = endpoint
        arrived = state.host_clock()
        stats = state.stats  # a reset during the call must not lose its record
        status: int | str = DROPPED
        try:
            response = await _checked(request, state, endpoint, handler)
            status = response.status
            return response
        except ConnectionDropped:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError from None
        finally:
            caller = request.get(CALLER)
            stats.record_call(arrived, endpoint, status, caller.key_id if caller else None)

    return serve


def _fault_error(fault: Fault) -> ApiError:
    headers = {}
    if fault.retry_after_s is not None:
        headers["retry-after"] = retry_after_header(fault.retry_after_s)
    return ApiError(fault.status, f"Emulated HTTP {fault.status} ({fault.source})", headers=headers)


async def _checked(
    request: web.Request, state: EmulatorState, endpoint: str, handler: Handler
) -> web.StreamResponse:
    config = state.config
    if config.latency_ms:
        await asyncio.sleep(config.latency_ms / 1000)
    try:
        caller = request[CALLER] = identify(request.headers, config)
        problem = refusal(caller)
        if problem is not None:
            raise ApiError(401, problem)
        if config.rpm_limit:
            # The host's clock: a change of --clock-offset-s must not move the window.
            wait_s = state.limiter.try_acquire(config.rpm_limit, state.host_clock())
            if wait_s is not None:
                state.stats.rate_limited += 1
                raise ApiError(
                    429,
                    f"Number of requests has exceeded your per-minute rate limit "
                    f"({config.rpm_limit} requests per minute) for the Message Batches API",
                    headers={"retry-after": retry_after_header(wait_s, minimum_s=1)},
                )
        fault = state.faults.pick(endpoint, caller.key_id)
        if fault is not None:
            state.stats.record_fault(fault.source)
            if fault.kind == "status":
                raise _fault_error(fault)
            if fault.kind == "drop" or endpoint == "results":
                await drain(request)
                raise ConnectionDropped
        response = await handler(request, state)
        if fault is None:
            return response
        if fault.kind == "after_create":  # the batch is made; the client is told it failed
            raise _fault_error(fault)
        raise ConnectionDropped  # "lost": the work is done, the answer never arrives
    except ApiError as error:
        await drain(request)
        return error_response(error, request_id_of(request))


async def add_common_headers(request: web.Request, response: web.StreamResponse) -> None:
    """request-id and the server clock's Date on every answer; the rate-limit headers on
    batch endpoints when a limit is on."""
    state = request.app[STATE]
    response.headers["request-id"] = request_id_of(request)
    # aiohttp writes Date from the host's clock unless one is set already.
    response.headers["Date"] = http_date(state.clock())
    if request.get(ENDPOINT) is None:
        return
    limit = state.config.rpm_limit
    if limit:
        offset_s = state.config.clock_offset_s
        response.headers.update(state.limiter.headers(limit, state.host_clock(), offset_s))


@web.middleware
async def error_envelope(request: web.Request, handler: AiohttpHandler) -> web.StreamResponse:
    """Router errors (unknown path, wrong method) in the API's JSON error envelope."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = f"{exc.reason}: {request.method} {request.path}"
        return error_response(ApiError(exc.status, message), request_id_of(request))
