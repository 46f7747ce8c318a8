"""The emulator's own endpoints under /_emulator (no key needed): stats, calls, config, reset."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from batchline.emulator.config import ConfigError
from batchline.emulator.pipeline import request_id_of
from batchline.emulator.state import STATE
from batchline.emulator.wire import ApiError, error_response, json_response


async def stats(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    now = state.clock()
    snapshot: dict[str, Any] = state.stats.snapshot()
    snapshot["queued_requests"] = state.store.queued_requests(now)
    snapshot["batches"] = state.store.history(now)
    return json_response(snapshot)


async def calls(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[STATE].stats.calls_json())


async def get_config(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[STATE].config.to_json())


async def set_config(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = await request.read()
    try:
        changes = orjson.loads(body) if body.strip() else {}
        if not isinstance(changes, dict):
            raise ConfigError("the body must be a JSON object of config keys")
        changed = state.config.apply(changes)
    except (orjson.JSONDecodeError, ConfigError) as exc:
        return error_response(ApiError(400, str(exc)), request_id_of(request))
    if "seed" in changed:
        state.faults.reseed()
    return json_response(state.config.to_json())


async def reset(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state.reset()
    return json_response({"reset": True, "config": state.config.to_json()})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/_emulator/stats", stats)
    app.router.add_get("/_emulator/calls", calls)
    app.router.add_get("/_emulator/config", get_config)
    app.router.add_post("/_emulator/config", set_config)
    app.router.add_post("/_emulator/reset", reset)
