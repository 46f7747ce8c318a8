"""Redis key names of webhook delivery state, all under `<prefix>:wh:`."""

from __future__ import annotations

from dataclasses import dataclass


def lane_ref(endpoint_id: str, job_id: str) -> str:
    """One endpoint's deliveries of one job: delivered strictly in order."""
    return f"{endpoint_id}|{job_id}"


def split_lane_ref(ref: str) -> tuple[str, str]:
    endpoint_id, job_id = ref.split("|", 1)
    return endpoint_id, job_id


def delivery_ref(endpoint_id: str, event_id: str) -> str:
    """How operators name a delivery (`webhooks replay ep_...:evt_...`)."""
    return f"{endpoint_id}:{event_id}"


def split_delivery_ref(ref: str) -> tuple[str, str]:
    endpoint_id, sep, event_id = ref.partition(":")
    if not sep or not endpoint_id or not event_id:
        raise ValueError(f"not a delivery id: {ref!r} (expected ENDPOINT:EVENT)")
    return endpoint_id, event_id


@dataclass(frozen=True)
class WebhookKeys:
    """Every key of webhook delivery state."""

    prefix: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:wh"

    @property
    def endpoints(self) -> str:
        """Hash: endpoint id -> JSON {url, kind}, every endpoint ever delivered to."""
        return f"{self.base}:endpoints"

    def delivery(self, endpoint_id: str, event_id: str) -> str:
        """Hash: one event for one endpoint: state, attempts, next try, body as sent."""
        return f"{self.base}:d:{endpoint_id}:{event_id}"

    def lane(self, ref: str) -> str:
        """List: event ids waiting for one endpoint and one job, the head being tried."""
        return f"{self.base}:lane:{ref}"

    @property
    def lane_prefix(self) -> str:
        return f"{self.base}:lane:"

    @property
    def due(self) -> str:
        """Sorted set: lane ref -> when its head is due (a retry, or a lease running out)."""
        return f"{self.base}:due"

    def log(self, endpoint_id: str) -> str:
        """List: the endpoint's delivery log, newest first (JSON per attempt)."""
        return f"{self.base}:log:{endpoint_id}"

    @property
    def dead(self) -> str:
        """Sorted set: delivery ref -> when it failed its last attempt."""
        return f"{self.base}:dead"

    @property
    def chain(self) -> str:
        """String: the id of the one live scheduler chain."""
        return f"{self.base}:chain"

    @property
    def dispatch_lock(self) -> str:
        """String: held by the one dispatcher reading the event stream."""
        return f"{self.base}:dispatch:lock"
