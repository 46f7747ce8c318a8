"""`batchline doctor`, `batchline metrics` and `batchline unblock`: operating a Batchline fleet."""

from __future__ import annotations

import sys

import click
import orjson

STATUS_STYLE = {
    "ok": ("OK", "green"),
    "warn": ("WARN", "yellow"),
    "fail": ("FAIL", "red"),
    "skip": ("SKIP", "bright_black"),
}


@click.command()
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.1),
    default=1.5,
    show_default=True,
    help="Seconds to wait for workers to answer.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(timeout_s: float, as_json: bool) -> None:
    """Check Redis, the workers and the API (or the emulator), and say what is wrong.

    Checks run with this shell's environment (BATCHLINE_*, ANTHROPIC_API_KEY,
    ANTHROPIC_BASE_URL): run it where the workers run, e.g. `docker compose exec worker
    batchline doctor`. Exit code 1 when a check fails.
    """
    from batchline import doctor as checks
    from batchline.settings import reload_settings

    found = checks.run(reload_settings, timeout_s=timeout_s)
    failed = any(c.failed for c in found)
    if as_json:
        out = {"ok": not failed, "checks": [c.as_dict() for c in found]}
        click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        width = max(len(c.name) for c in found)
        for c in found:
            label, color = STATUS_STYLE[c.status]
            line = (
                f"{click.style(f'{label:<4}', fg=color, bold=True)}  {c.name:<{width}}  {c.detail}"
            )
            if c.hint:
                line += f" -- {c.hint}"
            click.echo(line)
    sys.exit(1 if failed else 0)


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
        answer = client._call("batchline.unblock_chunk", timeout_s, args=(job_id, number, resend))
        click.echo(f"chunk {number}: {answer['state']}: {answer['message']}")
