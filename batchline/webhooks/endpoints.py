"""Webhook endpoints: global subscriptions and per-job URLs, the events they get, their secrets."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from batchline.errors import JobRefused
from batchline.events import Event
from batchline.settings import Settings, WebhookSubscription
from batchline.webhooks.errors import NotConfigured, WebhookError
from batchline.webhooks.urls import Policy, display, resolve

Kind = Literal["subscription", "job"]


def endpoint_id(url: str) -> str:
    """A stable id per URL: one delivery per URL and event, whoever asked for it."""
    return "ep_" + hashlib.sha256(url.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Endpoint:
    """Where an event goes and how (never holds a secret: those are read when signing)."""

    id: str
    url: str
    kind: Kind
    include_bodies: bool = False

    @property
    def shown(self) -> str:
        return display(self.url)


def wants(sub: WebhookSubscription, type_: str) -> bool:
    """Whether a subscription's event types ("*", "job.*", "result.failed") match."""
    return any(fnmatchcase(type_, pattern) for pattern in sub.event_types)


def targets(settings: Settings, event: Event, job_webhook_url: str | None) -> list[Endpoint]:
    """Every endpoint this event goes to; a URL both subscribed and per-job gets it once."""
    found: dict[str, Endpoint] = {}
    for sub in settings.webhook_subscriptions:
        if wants(sub, event["type"]):
            eid = endpoint_id(sub.url)
            found.setdefault(eid, Endpoint(eid, sub.url, "subscription", sub.include_bodies))
    if job_webhook_url:
        eid = endpoint_id(job_webhook_url)
        found.setdefault(eid, Endpoint(eid, job_webhook_url, "job"))
    return list(found.values())


def subscription(settings: Settings, eid: str) -> WebhookSubscription | None:
    for sub in settings.webhook_subscriptions:
        if endpoint_id(sub.url) == eid:
            return sub
    return None


def current(settings: Settings, eid: str, url: str, kind: Kind) -> tuple[Endpoint, list[str]]:
    """The endpoint as configured now, and its secrets (two during a rotation).

    A subscription for the URL wins over a per-job webhook: its receiver checks its own
    secret. NotConfigured when a subscription was removed or no secret is set.
    """
    sub = subscription(settings, eid)
    pair = (settings.webhook_secret, settings.webhook_secondary_secret)
    if sub is not None:
        endpoint = Endpoint(eid, sub.url, "subscription", sub.include_bodies)
        if sub.secret is not None:
            pair = (sub.secret, sub.secondary_secret)
    elif kind == "job":
        endpoint = Endpoint(eid, url, "job")
    else:
        raise NotConfigured(f"no subscription for {display(url)} any more")
    secrets = [s.get_secret_value() for s in pair if s is not None]
    if not secrets:
        raise NotConfigured(f"no secret to sign deliveries to {display(url)}")
    return endpoint, secrets


def check_job_webhook(url: str, settings: Settings) -> None:
    """Refuse a job's webhook_url now rather than fail every delivery later."""
    if not isinstance(url, str) or not url:
        raise JobRefused("webhook_url must be a non-empty string")
    if settings.webhook_secret is None:
        raise JobRefused("webhook_url needs BATCHLINE_WEBHOOK_SECRET set on the workers")
    try:
        resolve(url, Policy.from_settings(settings))
    except WebhookError as exc:
        raise JobRefused(f"webhook_url refused: {exc}") from None
