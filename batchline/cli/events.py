"""`batchline events` and `batchline webhooks`: following a job's events, replaying deliveries."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click
import orjson

from batchline.errors import BatchlineError, JobNotFound

F = TypeVar("F", bound=Callable[..., Any])
INTERRUPTED = 130


def _errors(fn: F) -> F:
    """A Batchline error is one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (BatchlineError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            sys.exit(INTERRUPTED)

    return wrapper  # type: ignore[return-value]


def _state() -> tuple[Any, Any]:
    from batchline.redisconn import connect
    from batchline.settings import get_settings

    settings = get_settings()
    return settings, connect(settings.state, settings)


def _json_line(obj: Any) -> None:
    click.echo(orjson.dumps(obj).decode())


def _json(obj: Any) -> None:
    click.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode())


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def event_line(event: dict[str, Any]) -> str:
    """`timestamp  type  key=value ...` (the job id and metadata left out)."""
    fields = []
    for key, value in event["data"].items():
        if key in ("job_id", "metadata") or value is None:
            continue
        shown = value if isinstance(value, str) else orjson.dumps(value).decode()
        fields.append(f"{key}={shown}")
    return f"{event['timestamp']}  {event['type']:<16} {' '.join(fields)}".rstrip()


@click.command()
@click.argument("job_id")
@click.option("--follow", is_flag=True, help="Keep printing events as they happen, to the end.")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
@_errors
def events(job_id: str, follow: bool, as_json: bool) -> None:
    """Print a job's events (kept for BATCHLINE_EVENTS_RETENTION_S)."""
    from batchline import events as ev
    from batchline.store import FINAL_JOB_STATES, Store

    settings, r = _state()
    keys = ev.EventKeys(settings.key_prefix)
    show = _json_line if as_json else (lambda e: click.echo(event_line(e)))
    if not r.exists(keys.job(job_id)) and Store(r, settings).job_state(job_id) is None:
        raise JobNotFound(f"no job {job_id!r} (or its events are past their retention)")
    if not follow:
        for _entry, event in ev.job_events(r, keys, job_id):
            show(event)
        return
    store = Store(r, settings)
    job_key = store.keys(job_id).job
    # A finished job's final event is written just after its state changes, or by the next
    # sweep if the worker that finished it died in between: wait that long at most.
    patience_s = 2 * settings.sweep_interval_s + 30
    ended_seen_at: float | None = None
    for maybe in ev.follow(r, keys, job_id):
        if maybe is not None:
            show(maybe)
            sys.stdout.flush()
            continue
        state = store.job_state(job_id)
        if state is None:
            return  # the job is past its retention
        if state not in FINAL_JOB_STATES:
            continue
        if r.hexists(job_key, "final_event_id"):
            return  # written, yet not in the stream: trimmed by age
        ended_seen_at = ended_seen_at or time.monotonic()
        if time.monotonic() - ended_seen_at > patience_s:
            click.echo(
                f"job {job_id} is {state}; its final event was not written "
                "(is beat running the sweep? `batchline doctor`)",
                err=True,
            )
            return


@click.group()
def webhooks() -> None:
    """Webhook deliveries: endpoints, the delivery log, dead letters, replay."""


@webhooks.command("endpoints")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_errors
def endpoints_cmd(as_json: bool) -> None:
    """Configured subscriptions and every endpoint delivered to, with what is waiting."""
    from batchline.webhooks import admin

    settings, r = _state()
    found = admin.endpoints(r, settings)
    if as_json:
        _json(found)
        return
    for ep in found:
        types = ",".join(ep.get("event_types", ["(job's events)"]))
        click.echo(
            f"{ep['endpoint']}  {ep['kind']:<12} {ep['url']}  types={types} "
            f"waiting={ep['lanes_waiting']} next_try={_when(ep['next_try_at'])} "
            f"dead={ep['dead_letters']}"
        )


@webhooks.command("log")
@click.argument("endpoint")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_errors
def log_cmd(endpoint: str, limit: int, as_json: bool) -> None:
    """An endpoint's latest delivery attempts (ENDPOINT is its ep_ id or its URL)."""
    from batchline.webhooks import admin

    settings, r = _state()
    entries = admin.log(r, settings, admin.find_endpoint(endpoint), limit)
    if as_json:
        _json(entries)
        return
    for e in entries:
        status = e["status"] if e["status"] is not None else "-"
        tail = f" next={e['next_at']}" if e.get("next_at") else ""
        err = f" error={e['error']}" if e.get("error") else ""
        click.echo(
            f"{e['at']}  {e['outcome']:<9} attempt {e['attempt']} status {status} "
            f"{e['type']} {e['delivery']}{tail}{err}"
        )


@webhooks.command("show")
@click.argument("delivery")
@_errors
def show_cmd(delivery: str) -> None:
    """One delivery's state (DELIVERY is ENDPOINT:EVENT, as the log and dead list show)."""
    from batchline.webhooks import admin

    settings, r = _state()
    info = admin.delivery(r, settings, delivery)
    if info is None:
        raise click.ClickException(f"no delivery {delivery} (or it is past its retention)")
    _json(info)


@webhooks.command("dead")
@click.option("--endpoint", help="Only this endpoint (ep_ id or URL).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_errors
def dead_cmd(endpoint: str | None, as_json: bool) -> None:
    """Deliveries that failed their last attempt, oldest first."""
    from batchline.webhooks import admin

    settings, r = _state()
    eid = admin.find_endpoint(endpoint) if endpoint else None
    found = admin.dead_letters(r, settings, eid)
    if as_json:
        _json(found)
        return
    for d in found:
        click.echo(
            f"{d['delivery']}  {d.get('type', '?'):<16} job={d.get('job_id')} "
            f"attempts={d.get('attempts')} last_status={d.get('last_status') or '-'} "
            f"dead_at={_when(d['dead_at'])} error={d.get('last_error') or '-'}"
        )
    if not found:
        click.echo("no dead letters", err=True)


@webhooks.command("replay")
@click.argument("deliveries", nargs=-1)
@click.option("--endpoint", help="Every dead letter of this endpoint (ep_ id or URL).")
@click.option("--all", "replay_all", is_flag=True, help="Every dead letter.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_errors
def replay_cmd(
    deliveries: tuple[str, ...], endpoint: str | None, replay_all: bool, as_json: bool
) -> None:
    """Send dead letters again, with their original webhook-id, body and a fresh schedule."""
    from batchline.messaging.app import create_app
    from batchline.messaging.dispatch import CeleryDispatcher
    from batchline.webhooks import admin

    settings, r = _state()
    refs = list(deliveries)
    if endpoint or replay_all:
        eid = admin.find_endpoint(endpoint) if endpoint else None
        refs += [d["delivery"] for d in admin.dead_letters(r, settings, eid)]
    if not refs:
        raise click.ClickException("name deliveries (ENDPOINT:EVENT), or --endpoint, or --all")
    done = admin.replay(r, settings, CeleryDispatcher(create_app(settings)), refs)
    if as_json:
        _json(done)
        return
    for ref, what in done.items():
        click.echo(f"{ref}  {what}")
