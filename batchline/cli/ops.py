"""`batchline metrics` and `batchline unblock`: operating a Batchline fleet."""

from __future__ import annotations

import sys

import click

from batchline.messaging.names import TaskName


@click.command()
@click.option("--host", help="Interface to listen on [default: BATCHLINE_METRICS_HOST].")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="Port [default: BATCHLINE_METRICS_PORT]."
)
@click.option("--once", is_flag=True, help="Print one scrape to stdout and exit.")
def metrics(host: str | None, port: int | None, once: bool) -> None:
    """Serve Prometheus metrics read from Redis on /metrics.

    Jobs by state, requests by terminal state, batches in flight, queue depths per stage,
    unacknowledged messages, API calls and 429s, tokens, cost and Redis memory: what Flower
    does not show. One exporter serves the whole fleet; it holds no state of its own.
    """
    from batchline import logs
    from batchline import metrics as exporter
    from batchline.settings import get_settings

    settings = get_settings()
    if once:
        sys.stdout.buffer.write(exporter.render(settings))
        return
    logs.setup(settings)
    host = host if host is not None else settings.metrics_host
    port = port if port is not None else settings.metrics_port
    try:
        exporter.serve(settings, host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None


@click.command()
@click.argument("job_id")
@click.option(
    "--chunk",
    "chunks",
    type=int,
    multiple=True,
    help="A blocked chunk (repeatable; default: every blocked chunk of the job).",
)
@click.option(
    "--resend",
    is_flag=True,
    help="Give up a batch the API no longer shows (404, or past its expiry) and send its "
    "requests that have no result again. Tried as a cancel first: a batch that answers "
    "is canceled and its results read, never duplicated.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=120,
    show_default=True,
    help="Seconds to wait for a worker to answer each chunk.",
)
def unblock(job_id: str, chunks: tuple[int, ...], resend: bool, timeout_s: float) -> None:
    """Look again at a job's blocked batches (status shows them, and why).

    A batch is blocked when the API answered 404 for it after showing it (a key of another
    workspace, say), when it stayed in progress past its expiry, or when its results could
    not be read: Batchline sends nothing again on a guess. Without --resend each batch is
    looked at again and, if it answers, carried on with.
    """
    from batchline.client import Client

    client = Client()
    status = client.status(job_id)
    targets = list(chunks) or [b["chunk"] for b in status.get("blocked", [])]
    if not targets:
        click.echo(f"job {job_id} has no blocked batch")
        return
    for number in targets:
        answer = client._call(TaskName.UNBLOCK_CHUNK, timeout_s, args=(job_id, number, resend))
        click.echo(f"chunk {number}: {answer['state']}: {answer['message']}")
