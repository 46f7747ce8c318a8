"""The `batchline` command line: submit, status, results, cancel, jobs, demo, emulator."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click
import orjson
import redis

from batchline.cli.doctor import doctor
from batchline.cli.events import events, webhooks
from batchline.cli.ops import metrics, unblock
from batchline.emulator.cli import emulator
from batchline.errors import BatchlineError
from batchline.redaction import redact_url

F = TypeVar("F", bound=Callable[..., Any])

# Exit codes (docs/guide.md#exit-codes). 1 and 2 are click's own: a ClickException (a refused
# job, an unknown job, an unreachable Redis or broker) and a UsageError (bad options).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_FAILED = 3  # the job has at least one failed request
EXIT_CANCELED = 4  # the job was canceled (or is being canceled)
INTERRUPTED = 130  # the shell's code for a command stopped by Ctrl-C

EXIT_CODES_HELP = f"""\b
Exit codes:
  {EXIT_OK}    success; for submit --wait and status: no request failed and
       the job was not canceled (a job still running counts)
  {EXIT_ERROR}    an error: a refused job, an unknown job, Redis or a worker
       that does not answer
  {EXIT_USAGE}    a usage error (a bad option, a missing file)
  {EXIT_FAILED}    submit --wait, status: at least one request of the job failed
  {EXIT_CANCELED}    submit --wait, status: the job was canceled (or is canceling)
  {INTERRUPTED}  Ctrl-C stopped the watching; the job goes on"""


def job_exit_code(st: dict[str, Any]) -> int:
    """A job's status as an exit code: canceled first, then any failed request, else 0."""
    if st["state"] in ("canceled", "canceling"):
        return EXIT_CANCELED
    if int(st["counts"].get("failed") or 0) > 0:
        return EXIT_FAILED
    return EXIT_OK


def user_error(exc: Exception) -> click.ClickException | None:
    """The one line to show for a user's mistake or an unreachable service, else None."""
    from kombu.exceptions import OperationalError
    from pydantic import ValidationError

    if isinstance(exc, BatchlineError):
        return click.ClickException(str(exc))
    if isinstance(exc, ValidationError):
        from batchline.ops.doctor import settings_problem

        return click.ClickException(settings_problem(exc))
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        from batchline.settings import get_settings

        url = redact_url(get_settings().state)
        why = " ".join(str(exc).split())
        hint = " (check the password in BATCHLINE_REDIS_URL)" if "auth" in why.lower() else ""
        return click.ClickException(f"cannot reach Redis at {url}: {why}{hint}")
    if isinstance(exc, OperationalError):
        from batchline.settings import get_settings

        url = redact_url(get_settings().broker)
        return click.ClickException(f"cannot reach the broker at {url}: {exc}")
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
        return click.ClickException(f"{exc.strerror}: {exc.filename}")
    if isinstance(exc, TimeoutError):
        return click.ClickException(str(exc))
    return None


def user_errors(fn: F) -> F:
    """A user's mistake or an unreachable service is one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            err = user_error(exc)
            if err is None:
                raise
            raise err from None

    return wrapper  # type: ignore[return-value]


class BatchlineGroup(click.Group):
    """The command group: every command's user errors become one line, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            err = user_error(exc)
            if err is None:
                raise
            raise err from None


def _client() -> Any:
    from batchline.client import Client

    return Client()


def _json(obj: Any) -> None:
    click.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode())


def follow(
    client: Any, job_id: str, interval_s: float = 0.5, plain: bool | None = None
) -> dict[str, Any]:
    """Show live progress until the job ends; returns the final status."""
    from batchline.cli.progress import JobProgress

    view = JobProgress(plain=plain)
    try:
        return client.wait(job_id, interval_s=interval_s, on_progress=view.update)
    except KeyboardInterrupt:
        view.close()
        click.echo(
            f"stopped watching; job {job_id} goes on (`batchline status {job_id} --watch`)",
            err=True,
        )
        sys.exit(INTERRUPTED)
    finally:
        view.close()


@click.group(
    cls=BatchlineGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(package_name="batchline")
def main() -> None:
    """Run bulk Claude work through the Message Batches API."""


INPUT_FORMATS = ("jsonl", "csv", "tsv", "parquet")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True, allow_dash=True))
@click.option(
    "--format",
    "input_format",
    type=click.Choice(INPUT_FORMATS),
    help="FILE's format (default: from its extension, else jsonl; gzip and zstd are "
    "recognised by their content).",
)
@click.option(
    "--template",
    help='Build each row\'s prompt from its columns: "Summarize: {text}".',
)
@click.option(
    "--template-file",
    type=click.Path(dir_okay=False, exists=True),
    help="Read the prompt template from this file.",
)
@click.option(
    "--id-column",
    help="The column whose value becomes each row's custom_id (default: the row number).",
)
@click.option("--model", help="Default model for lines that do not name one.")
@click.option("--max-tokens", type=int, help="Default max_tokens.")
@click.option(
    "--system",
    help="Default system prompt; with --template, a template too (filled from each row).",
)
@click.option(
    "--job-id",
    help="Idempotency key (default: derived from FILE's content and the job's options).",
)
@click.option(
    "--new",
    "fresh",
    is_flag=True,
    help="Make a new job even if the same FILE and options were submitted before.",
)
@click.option("--max-attempts", type=int, help="Attempts per request for retryable errors.")
@click.option("--accept-invalid", is_flag=True, help="Send the valid lines, reject the rest.")
@click.option("--on-result", help="Celery task name called once per finished request.")
@click.option("--on-complete", help="Celery task name called once when the job ends.")
@click.option("--hook-queue", help="Queue for the hook tasks (default: celery).")
@click.option(
    "--handler",
    help="package.module:function called on the results workers once per finished request.",
)
@click.option("--metadata", help="JSON echoed back in status and events.")
@click.option("--webhook-url", help="Signed webhooks for this job's events.")
@click.option("--max-cost-usd", type=float, help="Refuse the job if its estimate is higher.")
@click.option("--cache/--no-cache", default=False, help="Answer repeats from earlier results.")
@click.option(
    "--wait",
    is_flag=True,
    help="Show progress until the job ends; the exit code then tells how it ended.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=300,
    show_default=True,
    help="Seconds to wait for a worker to accept the job (it may still run later).",
)
@user_errors
def submit(
    file: str,
    input_format: str | None,
    template: str | None,
    template_file: str | None,
    id_column: str | None,
    model: str | None,
    max_tokens: int | None,
    system: str | None,
    job_id: str | None,
    fresh: bool,
    max_attempts: int | None,
    accept_invalid: bool,
    on_result: str | None,
    on_complete: str | None,
    hook_queue: str | None,
    handler: str | None,
    metadata: str | None,
    webhook_url: str | None,
    max_cost_usd: float | None,
    cache: bool,
    wait: bool,
    as_json: bool,
    timeout_s: float,
) -> None:
    """Submit FILE (JSONL requests, or a CSV, TSV or Parquet table; - for standard input);
    the job id is the last line printed.

    A table's rows become requests through --template (and --system), each row's
    custom_id its --id-column or its row number; `batchline results JOB -o answers.csv`
    then writes the same rows with the answers beside them. Without a template a row is a
    request itself (a `prompt` column, say). gzip and zstd files are read as they are.

    A submit is idempotent: without --job-id the job id is derived from FILE's content and
    the options that define the job (defaults, attempts, hooks, metadata, webhook, budget,
    cache, format, templates, id column; not --timeout, --wait or --json), so running the
    same submit again (after a timeout, say) returns the existing job instead of running
    and paying for it twice. That holds even for a completed job, until its data expires
    (BATCHLINE_RETENTION_S after it ends). The same job id with different content is
    refused. --new makes a new job, with a random id, every time.

    With --wait the command ends when the job does, naming its top failure reasons, and
    exits 4 if the job was canceled, 3 if any request failed, else 0 (see `batchline
    --help`).
    """
    if fresh and job_id:
        raise click.UsageError("give --job-id or --new, not both")
    if template is not None and template_file is not None:
        raise click.UsageError("give --template or --template-file, not both")
    if template_file is not None:
        template = _read_template(template_file)
    defaults = {
        k: v
        for k, v in (("model", model), ("max_tokens", max_tokens), ("system", system))
        if v is not None and not (k == "system" and template is not None)
    }
    options: dict[str, Any] = {
        "defaults": defaults,
        "accept_invalid": accept_invalid,
        "cache": cache,
    }
    for key, value in (
        ("format", input_format),
        ("template", template),
        ("system_template", system if template is not None else None),
        ("id_column", id_column),
        ("job_id", job_id),
        ("max_attempts", max_attempts),
        ("on_result", on_result),
        ("on_complete", on_complete),
        ("hook_queue", hook_queue),
        ("handler", handler),
        ("webhook_url", webhook_url),
        ("max_cost_usd", max_cost_usd),
    ):
        if value is not None:
            options[key] = value
    if metadata is not None:
        try:
            options["metadata"] = orjson.loads(metadata)
        except orjson.JSONDecodeError as exc:
            raise click.ClickException(f"--metadata is not valid JSON: {exc}") from None
    client = _client()
    result = client.submit(file, timeout_s=timeout_s, fresh=fresh, **options)
    if not as_json:
        # Said before any wait, so whoever watches knows the job and what was refused.
        err = functools.partial(click.echo, err=True)
        note = ""
        if result.get("existing"):
            note = " (existing job)" if job_id else " (existing job: same content and options)"
        err(
            f"job {result['job_id']}: accepted {result['accepted']} request(s){note}; "
            f"rejected {len(result['rejected'])}"
        )
        unit = "row" if template is not None or _is_table(file, input_format) else "line"
        for line in result["rejected"][:20]:
            err(f"  {unit} {line['line']}: {line['reason']}")
    # Progress ends with the final state (a last plain line, or the live view's last frame).
    final = follow(client, result["job_id"]) if wait else None
    if as_json:
        _json({**result, **({"status": final} if final else {})})
    else:
        if final is not None:
            _echo_failures(final, err=True)
        click.echo(result["job_id"])
    if final is not None:
        _exit(job_exit_code(final))


def _exit(code: int) -> None:
    if code != EXIT_OK:
        click.get_current_context().exit(code)


def _echo_failures(st: dict[str, Any], err: bool = False) -> None:
    """The top failure reasons, most first, when the job has failed requests."""
    from batchline.cli.progress import failure_text, snapshot

    text = failure_text(snapshot(st))
    if text:
        click.echo(f"top failure reasons: {text}", err=err)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--watch",
    is_flag=True,
    help="Follow the job until it ends: its phase, rate and ETA as it goes.",
)
@user_errors
def status(job_id: str, as_json: bool, watch: bool) -> None:
    """Show a job's state and phase, counts, batches, cost and top failure reasons.

    The exit code tells how the job stands, with --json too: 3 once any request failed,
    4 for a canceled job, 0 otherwise (a job still running without a failure included).
    """
    client = _client()
    st = follow(client, job_id, plain=True if as_json else None) if watch else client.status(job_id)
    if as_json:
        _json(st)
        _exit(job_exit_code(st))
        return
    from batchline.cli.progress import BATCH_PHASES, summary_line

    click.echo(summary_line(st))
    _echo_failures(st)
    for b in st.get("batches", []):
        click.echo(
            f"  batch {b['chunk']:>3} {b['batch_id'] or '-':<36} attempt {b['attempt']} "
            f"{BATCH_PHASES.get(b['status'], b['status']):<15} "
            f"{b['processed']}/{b['requests']} recorded"
            + (f" error: {b['error']}" if b.get("error") else "")
        )
    for blocked in st.get("blocked", []):
        click.echo(
            f"  blocked: batch {blocked['chunk']} ({blocked['reason']}): {blocked['error']}; "
            f"`{blocked['command']}`"
            + (f" or `{blocked['resend_command']}`" if blocked.get("resend_command") else "")
        )
    for wait in st.get("recovery", []):
        click.echo(f"  waiting on recovery: {wait['what']}")
    _exit(job_exit_code(st))


def _read_template(path: str) -> str:
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    # An editor's final newline is not part of the prompt.
    return text[:-1] if text.endswith("\n") else text


def _is_table(file: str, input_format: str | None) -> bool:
    from batchline.formats import TABLE_FORMATS, detect_format

    return detect_format(file, input_format) in TABLE_FORMATS


OUTPUT_FORMATS = ("csv", "tsv", "parquet", "jsonl")


@main.command()
@click.argument("job_id")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    help="Write to this file instead of stdout (.csv, .tsv, .parquet or .jsonl).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(OUTPUT_FORMATS),
    help="The table's format (default: from the output's extension, else jsonl).",
)
@click.option(
    "--records",
    is_flag=True,
    help="The result records themselves (JSONL), not the input rows with answers.",
)
@click.option("--ordered", is_flag=True, help="Records in input order (tables always are).")
@user_errors
def results(
    job_id: str, output: str | None, output_format: str | None, records: bool, ordered: bool
) -> None:
    """Write the job's results: the input rows in input order with the answer's columns
    added (state, answer, error_type, error_message, input_tokens, output_tokens,
    cost_usd) for a table job or a table output (-o answers.csv, .tsv, .parquet); else,
    or with --records, the result records as JSONL (one per custom_id)."""
    from batchline.outputs import output_format as pick_format
    from batchline.outputs import write_table

    if output == "-":
        output = None
    client = _client()
    fmt = pick_format(output, output_format)
    table = None if records else client.table(job_id)
    if table is not None and (table.kept or fmt != "jsonl"):
        if fmt == "parquet" and output is None:
            raise click.UsageError("a Parquet table goes to a file: give -o answers.parquet")
        if output is None:
            write_table(table, sys.stdout.buffer, fmt)
            return
        from batchline.outputs import write_table_file

        count = write_table_file(table, output, fmt)
        click.echo(f"wrote {count} row(s) to {output}", err=True)
        return
    if output_format not in (None, "jsonl"):
        raise click.UsageError("--records are JSONL")
    found = client.results(job_id, ordered=ordered)
    out = open(output, "wb") if output else sys.stdout.buffer  # noqa: SIM115
    count = 0
    try:
        for rec in found:
            out.write(orjson.dumps(rec) + b"\n")
            count += 1
    finally:
        if output:
            out.close()
    if output:
        click.echo(f"wrote {count} record(s) to {output}", err=True)


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def cancel(job_id: str, as_json: bool) -> None:
    """Cancel a job: its batches are canceled, unfinished requests end canceled."""
    st = _client().cancel(job_id)
    if as_json:
        _json(st)
    else:
        click.echo(f"{job_id} {st['state']}")


@main.command()
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def jobs(limit: int, as_json: bool) -> None:
    """List recent jobs, newest first.

    A header row, then one row a job: columns apart by spaces, no space inside a value
    (SUBMITTED is local time, COST_USD what was spent so far). --json gives the statuses
    as a list."""
    found = _client().jobs(limit)
    if as_json:
        _json(found)
        return
    rows = [JOBS_HEADER]
    for st in found:
        c = st["counts"]
        rows.append(
            (
                st["job_id"],
                st["state"],
                time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(st["submitted_at"])),
                str(c["total"]),
                str(c["succeeded"]),
                str(c["failed"]),
                str(c["canceled"]),
                str(max(0, c["in_flight"])),
                f"{st['cost_usd']:.4f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(JOBS_HEADER))]
    for row in rows:
        cells = [
            cell.ljust(w) if i < JOBS_TEXT_COLUMNS else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        click.echo("  ".join(cells).rstrip())


JOBS_HEADER = (
    "JOB",
    "STATE",
    "SUBMITTED",
    "TOTAL",
    "SUCCEEDED",
    "FAILED",
    "CANCELED",
    "IN_FLIGHT",
    "COST_USD",
)
JOBS_TEXT_COLUMNS = 3  # left-aligned; the numbers after them right-aligned


@main.command()
@click.option(
    "--no-emulator",
    is_flag=True,
    help="Run against the real API (needs ANTHROPIC_API_KEY; spends money).",
)
@click.option(
    "--example",
    type=click.Path(dir_okay=False, exists=True),
    help="A JSONL file to run instead of the bundled example.",
)
@click.option(
    "-o",
    "--output",
    default="demo-results.jsonl",
    show_default=True,
    help="Where to write the result records.",
)
@click.option("--workers", type=int, default=1, show_default=True)
@click.option("--concurrency", type=int, default=3, show_default=True)
@click.option(
    "--processing-seconds",
    type=float,
    default=1.5,
    show_default=True,
    help="How long the emulator takes per batch.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@user_errors
def demo(
    no_emulator: bool,
    example: str | None,
    output: str,
    workers: int,
    concurrency: int,
    processing_seconds: float,
    as_json: bool,
) -> None:
    """Run the bundled example job end to end on this machine, then stop everything."""
    from pathlib import Path

    from batchline.cli import demo as demo_mod

    if no_emulator:
        import anthropic

        try:
            sdk = anthropic.Anthropic()
        except anthropic.AnthropicError:
            sdk = None
        if sdk is None or not (sdk.api_key or sdk.auth_token):
            raise click.ClickException("--no-emulator needs ANTHROPIC_API_KEY") from None
    outcome = demo_mod.run_demo(
        example=Path(example) if example else demo_mod.EXAMPLE,
        output=Path(output),
        emulate=not no_emulator,
        workers=workers,
        concurrency=concurrency,
        processing_seconds=processing_seconds,
    )
    if as_json:
        _json(
            {
                "job_id": outcome.job_id,
                "seconds": round(outcome.seconds, 3),
                "output": str(outcome.output),
                "records": dict(outcome.states),
                "status": outcome.status,
            }
        )
        return
    demo_mod.print_summary(outcome)


main.add_command(emulator)
main.add_command(events)
main.add_command(webhooks)
main.add_command(doctor)
main.add_command(metrics)
main.add_command(unblock)
