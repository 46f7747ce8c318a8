"""`batchline emulator`: serve the emulated Message Batches API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from batchline.emulator import config as defaults
from batchline.emulator.config import ConfigError, EmulatorConfig

ENV_PREFIX = "BATCHLINE_EMULATOR_"


def _option(flag: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A flag that can also be set as BATCHLINE_EMULATOR_<FLAG>."""
    name = flag.split("/")[0].removeprefix("--").replace("-", "_").upper()
    return click.option(
        flag, envvar=ENV_PREFIX + name, show_envvar=True, show_default=True, **kwargs
    )


@click.command()
@_option("--host", default="127.0.0.1", help="Interface to listen on.")
@_option("--port", default=8765, type=int, help="Port to listen on.")
@_option(
    "--api-keys",
    default="",
    help="Comma-separated API keys to accept; empty accepts any non-empty key.",
)
@_option(
    "--workspaces",
    default="",
    help="Workspaces and their keys, as ws1=key1,key2;ws2=key3. When set, only these keys "
    "are accepted (--api-keys is ignored) and each sees only its workspace's batches; "
    "empty: every accepted key is in one workspace.",
)
@_option(
    "--processing-seconds",
    default=defaults.DEFAULT_PROCESSING_SECONDS,
    type=float,
    help="Time from create to end; request i of n is done at (i+1)/n of it.",
)
@_option(
    "--canceling-seconds",
    default=defaults.DEFAULT_CANCELING_SECONDS,
    type=float,
    help="How long a canceled batch stays `canceling` before it ends.",
)
@_option(
    "--rpm-limit",
    default=0,
    type=int,
    help="Calls per sliding 60 s window across all batch endpoints (0: no limit); "
    "over it: 429 with retry-after.",
)
@_option(
    "--queue-limit",
    default=0,
    type=int,
    help="Requests allowed in batches not yet ended (0: no limit); a create past it gets 429.",
)
@_option(
    "--error-rate",
    default=0.0,
    type=float,
    help="Share of batch-endpoint calls answered with an error from --error-statuses.",
)
@_option(
    "--error-statuses",
    default=",".join(str(status) for status in defaults.DEFAULT_ERROR_STATUSES),
    help="Comma-separated HTTP statuses that --error-rate picks from.",
)
@_option("--latency-ms", default=0.0, type=float, help="Delay added to every batch-endpoint call.")
@_option(
    "--drop-rate",
    default=0.0,
    type=float,
    help="Share of batch-endpoint calls whose connection is closed without an answer.",
)
@_option(
    "--lost-create-rate",
    default=0.0,
    type=float,
    help="Share of creates that make the batch but whose answer is cut off.",
)
@_option(
    "--error-after-create-rate",
    default=0.0,
    type=float,
    help="Share of creates that make the batch, then answer a status from --error-statuses.",
)
@_option(
    "--transient-404/--no-transient-404",
    default=False,
    help="Answer 404 to the first retrieve of each batch.",
)
@_option("--seed", default=defaults.DEFAULT_SEED, type=int, help="Seed of the random faults.")
@_option(
    "--max-requests",
    default=defaults.API_MAX_BATCH_REQUESTS,
    type=int,
    help="Requests per batch; more gets 413 request_too_large.",
)
@_option(
    "--max-body-bytes",
    default=defaults.API_MAX_BATCH_BODY_BYTES,
    type=int,
    help="Bytes of create body; more gets 413 request_too_large.",
)
@_option(
    "--results-order",
    default="shuffled",
    type=click.Choice(defaults.RESULTS_ORDERS),
    help="Order of result lines: shuffled (fixed by the batch id), request (request order), "
    "random (a fresh shuffle on every download, drawn from --seed) or blocks (the fixed "
    "shuffle in blocks of --results-block-lines, the blocks in a fresh order every download).",
)
@_option(
    "--results-block-lines",
    default=1000,
    type=int,
    help="Lines per block of --results-order blocks.",
)
@_option(
    "--results-lines-per-s",
    default=0.0,
    type=float,
    help="Send results no faster than this many lines per second, as over a slow link "
    "(0: as fast as the connection allows).",
)
@_option(
    "--results-base-url",
    default="",
    help="Make results_url absolute on this base (as the API's https://api.anthropic.com is); "
    "the emulator still serves the path itself. Empty: results_url is the path alone.",
)
@_option(
    "--expiry-seconds",
    default=defaults.DEFAULT_EXPIRY_SECONDS,
    type=float,
    help="expires_at = created_at + this; requests not done by then end `expired` and the "
    "batch ends at expires_at.",
)
@_option(
    "--clock-offset-s",
    default=0.0,
    type=float,
    help="Seconds the server's clock runs ahead of the host's (negative: behind); batch "
    "timestamps, processing and the Date header follow it.",
)
def emulator(host: str, port: int, **flags: Any) -> None:
    """Serve a local emulator of Anthropic's Message Batches API.

    Point the SDK at it with base_url="http://HOST:PORT". A succeeded request answers
    "echo: " + the text of its last user message; the directives [[emulate:errored:TYPE]],
    [[emulate:errored-once:TYPE]], [[emulate:expired]] and [[emulate:expired-once]] in that
    text force an outcome. Admin endpoints (no key): GET /_emulator/stats,
    GET /_emulator/calls, GET|POST /_emulator/config (JSON keys = flag names, workspaces as
    {"ws1": ["key1", "key2"]}), POST /_emulator/reset.

    Config keys set only at runtime, cleared by a reset: lost_create_next (N creates whose
    answer is cut off), fail_next (a list of {"endpoint", "status", "retry_after",
    "after_create", "key_id"}: "after_create": true on a create makes the batch, then answers
    the status; "key_id" limits the fault to calls made with that key, as stats name keys),
    truncate_results_next, unknown_results_next, stall_next_create (the next N
    batches never end on their own, in_progress past expires_at until canceled) and
    hidden_batches (ids that answer 404 to every key and are left out of list until taken
    off it).
    """
    from batchline.emulator.app import serve

    try:
        config = EmulatorConfig.from_mapping(flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    serve(config, host, port)
