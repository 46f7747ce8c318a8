"""One webhook delivery attempt: claim the lane's head, sign, POST, record, move on."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchline import logs
from batchline.events import Event, utc_timestamp
from batchline.validation import api_custom_id
from batchline.webhooks import signing
from batchline.webhooks.endpoints import Endpoint, current
from batchline.webhooks.errors import DeliveryFailed, NotConfigured, UnsafeUrl
from batchline.webhooks.outbox import Claim, Next, Outbox
from batchline.webhooks.retry_schedule import RetrySchedule
from batchline.webhooks.sender import post
from batchline.webhooks.urls import Policy, display, resolve
from batchline.webhooks.wakeups import send_next
from batchline.wire import dumps

if TYPE_CHECKING:
    from batchline.pipeline.context import Context

# Attempts whose worker died do not count against the schedule, up to this many times the
# schedule's length (a payload that kills its worker every time must end somewhere).
LOST_ATTEMPTS_FACTOR = 2


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended."""

    kind: str  # ok | retry | dead
    status: int | None = None
    error: str = ""
    wait_s: float | None = None
    elapsed_ms: int | None = None
    address: str | None = None


def payload(ctx: Context, event: Event, endpoint: Endpoint) -> bytes:
    """The body to send: the event, with the result record when the endpoint asked for it."""
    body: dict[str, Any] = {**event, "data": dict(event["data"])}
    data = body["data"]
    if endpoint.include_bodies and event["type"].startswith("result.") and data.get("custom_id"):
        record = ctx.store.record(data["job_id"], api_custom_id(str(data["custom_id"])))
        if record is not None:
            data["record"] = record
    return dumps(body)


def _attempt(ctx: Context, outbox: Outbox, claim: Claim) -> Outcome:
    settings = ctx.settings
    schedule = RetrySchedule.from_settings(settings)
    if claim.attempt > LOST_ATTEMPTS_FACTOR * schedule.max_attempts:
        return Outcome("dead", error="too many attempts lost (the worker stopped each time)")
    try:
        endpoint, secrets = current(settings, claim.endpoint_id, claim.url, claim.kind)
        body = claim.body or outbox.save_body(claim, payload(ctx, claim.event, endpoint))
        target = resolve(endpoint.url, Policy.from_settings(settings))
        headers = signing.headers(claim.event_id, int(time.time()), body, secrets)
        resp = post(
            target,
            body,
            headers,
            timeout_s=settings.webhook_timeout_s,
            max_response_bytes=settings.webhook_max_response_bytes,
        )
    except (UnsafeUrl, NotConfigured) as exc:
        return Outcome("dead", error=str(exc))
    except DeliveryFailed as exc:
        status, error, retry_after, elapsed, address = None, str(exc), None, None, None
    else:
        if 200 <= resp.status < 300:
            return Outcome("ok", resp.status, elapsed_ms=resp.elapsed_ms, address=resp.address)
        status, retry_after = resp.status, resp.retry_after_s
        error = f"HTTP {resp.status}" + (f": {resp.excerpt}" if resp.excerpt else "")
        elapsed, address = resp.elapsed_ms, resp.address
    wait = schedule.next_wait_s(claim.failures + 1, retry_after)
    kind = "dead" if wait is None else "retry"
    return Outcome(kind, status, error[:500], wait, elapsed, address)


def _entry(claim: Claim, outcome: Outcome) -> dict[str, Any]:
    now = time.time()
    return {
        "at": utc_timestamp(now),
        "delivery": f"{claim.endpoint_id}:{claim.event_id}",
        "event_id": claim.event_id,
        "type": claim.event["type"],
        "job_id": claim.job_id,
        "attempt": claim.attempt,
        "outcome": {"ok": "delivered"}.get(outcome.kind, outcome.kind),
        "status": outcome.status,
        "error": outcome.error or None,
        "ms": outcome.elapsed_ms,
        "address": outcome.address,
        "next_at": utc_timestamp(now + outcome.wait_s) if outcome.wait_s is not None else None,
    }


def deliver(ctx: Context, endpoint_id: str, job_id: str, event_id: str) -> str:
    """Try the lane's head once if it is due and nobody else is; returns what happened."""
    outbox = Outbox(ctx.store.r, ctx.settings)
    got = outbox.claim(endpoint_id, job_id, event_id)
    if got is None:
        return "skipped"
    if isinstance(got, Next):
        send_next(ctx, endpoint_id, job_id, got)
        return "expired"
    claim = got
    send_next(ctx, endpoint_id, job_id, Next(chain=claim.chain))
    if claim.lost_previous:
        lost = Outcome("lost", error="the attempt before never reported back (worker stopped)")
        outbox.note_lost(claim, {**_entry(claim, lost), "attempt": claim.attempt - 1})
    outcome = _attempt(ctx, outbox, claim)
    nxt = outbox.finish(
        claim,
        outcome.kind,
        _entry(claim, outcome),
        wait_s=outcome.wait_s or 0.0,
        status=outcome.status,
        error=outcome.error,
    )
    logs.event(
        {"ok": "webhook.delivered", "retry": "webhook.retrying"}.get(outcome.kind, "webhook.dead"),
        level=20 if outcome.kind == "ok" else 30,
        job_id=job_id,
        endpoint=endpoint_id,
        url=display(claim.url),
        event_id=event_id,
        type=claim.event["type"],
        attempt=claim.attempt,
        status=outcome.status,
        error=outcome.error or None,
        wait_s=round(outcome.wait_s, 3) if outcome.wait_s is not None else None,
    )
    send_next(ctx, endpoint_id, job_id, nxt)
    return outcome.kind
