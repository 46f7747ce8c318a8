"""The aiohttp application of the emulator, and a runner for the command line."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from batchline.emulator import admin, endpoints
from batchline.emulator.config import EmulatorConfig
from batchline.emulator.pipeline import add_common_headers, batch_endpoint, error_envelope
from batchline.emulator.state import STATE, EmulatorState

BATCHES_PATH = "/v1/messages/batches"
# Bodies are read by the create handler itself, which answers 413 at --max-body-bytes;
# aiohttp's own cap only has to stay out of its way.
CLIENT_MAX_SIZE = 1 << 40


def create_app(config: EmulatorConfig, clock: Callable[[], float] = time.time) -> web.Application:
    app = web.Application(client_max_size=CLIENT_MAX_SIZE, middlewares=[error_envelope])
    app[STATE] = EmulatorState(config=config, host_clock=clock)
    router = app.router
    one = BATCHES_PATH + "/{batch_id}"
    router.add_post(BATCHES_PATH, batch_endpoint("create", endpoints.create))
    router.add_get(BATCHES_PATH, batch_endpoint("list", endpoints.list_batches), allow_head=False)
    router.add_get(one, batch_endpoint("retrieve", endpoints.retrieve), allow_head=False)
    router.add_delete(one, batch_endpoint("delete", endpoints.delete))
    router.add_post(one + "/cancel", batch_endpoint("cancel", endpoints.cancel))
    router.add_get(one + "/results", batch_endpoint("results", endpoints.results), allow_head=False)
    admin.add_routes(app)
    app.on_response_prepare.append(add_common_headers)
    return app


def serve(config: EmulatorConfig, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    app = create_app(config)

    def announce(_: object) -> None:
        print(f"Batchline emulator listening on http://{host}:{port}", flush=True)

    web.run_app(app, host=host, port=port, access_log=None, print=announce)
