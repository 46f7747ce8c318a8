"""What every batch-endpoint call goes through before its handler: latency, auth, limits, faults."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from batchline.emulator.intake import drain
from batchline.emulator.ratelimit import retry_after_header
from batchline.emulator.state import STATE, EmulatorState
from batchline.emulator.stats import DROPPED
from batchline.emulator.wire import ApiError, error_response, new_request_id

REQUEST_ID = "batchline_emulator_request_id"
ENDPOINT = "batchline_emulator_endpoint"

Handler = Callable[[web.Request, EmulatorState], Awaitable[web.StreamResponse]]
AiohttpHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConnectionDropped(Exception):
    """Raised to close the client's connection without an answer."""


def request_id_of(request: web.Request) -> str:
    request_id = request.get(REQUEST_ID)
    if request_id is None:
        request_id = request[REQUEST_ID] = new_request_id()
    return str(request_id)


def api_key_problem(request: web.Request, accepted: list[str]) -> str | None:
    """Why the call is not authenticated, or None. Both header styles are accepted."""
    offered = []
    api_key = request.headers.get("x-api-key")
    if api_key:
        offered.append(api_key)
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        offered.append(token.strip())
    if not offered:
        return "x-api-key header or Authorization: Bearer token is required"
    if accepted and not any(key in accepted for key in offered):
        return "invalid x-api-key"
    return None


def batch_endpoint(endpoint: str, handler: Handler) -> AiohttpHandler:
    """Wrap a handler in the checks and faults all batch endpoints share; record the call."""

    async def serve(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        request[ENDPOINT] = endpoint
        arrived = state.clock()
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
            stats.record_call(arrived, endpoint, status)

    return serve


async def _checked(
    request: web.Request, state: EmulatorState, endpoint: str, handler: Handler
) -> web.StreamResponse:
    config = state.config
    if config.latency_ms:
        await asyncio.sleep(config.latency_ms / 1000)
    try:
        problem = api_key_problem(request, config.api_keys)
        if problem is not None:
            raise ApiError(401, problem)
        if config.rpm_limit:
            wait_s = state.limiter.try_acquire(config.rpm_limit, state.clock())
            if wait_s is not None:
                state.stats.rate_limited += 1
                raise ApiError(
                    429,
                    f"Number of requests has exceeded your per-minute rate limit "
                    f"({config.rpm_limit} requests per minute) for the Message Batches API",
                    headers={"retry-after": retry_after_header(wait_s, minimum_s=1)},
                )
        fault = state.faults.pick(endpoint)
        if fault is not None:
            state.stats.record_fault(fault.source)
            if fault.kind == "status":
                headers = {}
                if fault.retry_after_s is not None:
                    headers["retry-after"] = retry_after_header(fault.retry_after_s)
                raise ApiError(
                    fault.status, f"Emulated HTTP {fault.status} ({fault.source})", headers=headers
                )
            if fault.kind == "drop" or endpoint == "results":
                await drain(request)
                raise ConnectionDropped
        response = await handler(request, state)
        if fault is not None:  # "lost": the work is done, the answer never arrives
            raise ConnectionDropped
        return response
    except ApiError as error:
        await drain(request)
        return error_response(error, request_id_of(request))


async def add_common_headers(request: web.Request, response: web.StreamResponse) -> None:
    """request-id on every answer; the rate-limit headers on batch endpoints when a limit is on."""
    response.headers["request-id"] = request_id_of(request)
    if request.get(ENDPOINT) is None:
        return
    state = request.app[STATE]
    if state.config.rpm_limit:
        response.headers.update(state.limiter.headers(state.config.rpm_limit, state.clock()))


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
