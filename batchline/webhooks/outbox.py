"""Webhook delivery state in Redis: per endpoint-and-job lanes, claims, retries, dead letters.

Each (endpoint, job) pair has a lane: a list of event ids delivered strictly in order, the
head being the one tried. A sorted set holds when each lane's head is due: a retry's time,
or the end of the lease of an attempt in progress (so the attempt of a worker that died is
sent again). Every change is one Lua script, so two workers never both own a head.
All times come from the Redis server's clock.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import redis

from batchline.events import Event
from batchline.keys import WebhookKeys, delivery_ref, lane_ref
from batchline.settings import Settings
from batchline.webhooks import scripts as lua
from batchline.webhooks.endpoints import Endpoint, Kind
from batchline.wire import dumps, loads

TICK_LIMIT = 500  # due lanes handed out per scheduler tick


def _s(value: Any) -> str | None:
    if value is None or value is False:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def new_chain_id() -> str:
    return "chain_" + secrets.token_hex(8)


@dataclass(frozen=True)
class Claim:
    """The head of a lane, now owned by one attempt until its lease runs out."""

    endpoint_id: str
    job_id: str
    event_id: str
    token: str
    attempt: int  # attempts started, this one included
    failures: int  # attempts that ended without a 2xx before this one
    event: Event
    url: str
    kind: Kind
    body: bytes | None  # as first sent; retries send the same bytes
    chain: str | None  # a scheduler chain to start
    lost_previous: bool  # the attempt before this one never reported back


@dataclass(frozen=True)
class Next:
    """What to send after a change: the lane's new head now, and/or a new scheduler chain."""

    event_id: str | None = None
    chain: str | None = None


@dataclass(frozen=True)
class Tick:
    """A scheduler tick: heads due now, the wait until the next one, the chain to go on."""

    superseded: bool
    due: list[tuple[str, str, str]]  # (endpoint id, job id, event id)
    wait_s: float | None
    chain: str | None


class Outbox:
    """Lanes, claims, retries and dead letters of webhook deliveries."""

    def __init__(self, r: redis.Redis, settings: Settings):
        self.r = r
        self.settings = settings
        self.keys = WebhookKeys(settings.key_prefix)

    @property
    def lease_s(self) -> float:
        return self.settings.webhook_lease_s

    @property
    def ttl_s(self) -> int:
        return self.settings.events_retention_s

    @property
    def chain_ttl_ms(self) -> int:
        # Long enough for a tick's countdown plus a queue that is busy for a while; a chain
        # that died lets the key expire and the next change starts another.
        return int((3 * self.settings.webhook_scheduler_interval_s + 30) * 1000)

    def enqueue(self, endpoint: Endpoint, event: Event) -> tuple[bool, Next]:
        """Queue the event for the endpoint once (a repeat is a no-op): (queued, next)."""
        job_id = event["data"]["job_id"]
        ref = lane_ref(endpoint.id, job_id)
        code, chain = lua.ENQUEUE(
            self.r,
            lua.EnqueueKeys(
                delivery=self.keys.delivery(endpoint.id, event["id"]),
                lane=self.keys.lane(ref),
                due=self.keys.due,
                endpoints=self.keys.endpoints,
                chain=self.keys.chain,
            ),
            lua.EnqueueArgs(
                event_id=event["id"],
                event=dumps(event),
                url=endpoint.url,
                kind=endpoint.kind,
                job_id=job_id,
                endpoint_id=endpoint.id,
                lane_ref=ref,
                lease_s=self.lease_s,
                ttl_s=self.ttl_s,
                endpoint=dumps({"url": endpoint.url, "kind": endpoint.kind}),
                chain_id=new_chain_id(),
                chain_ttl_ms=self.chain_ttl_ms,
                event_type=event["type"],
            ),
        )
        head = event["id"] if int(code) == 2 else None
        return int(code) > 0, Next(head, _s(chain))

    def claim(self, endpoint_id: str, job_id: str, event_id: str) -> Claim | Next | None:
        """Own the lane's head for one attempt; None if it is not due or someone else has it.

        A Next comes back when the delivery had expired and was skipped.
        """
        ref = lane_ref(endpoint_id, job_id)
        token = secrets.token_hex(8)
        reply = lua.CLAIM(
            self.r,
            lua.ClaimKeys(
                delivery=self.keys.delivery(endpoint_id, event_id),
                lane=self.keys.lane(ref),
                due=self.keys.due,
                chain=self.keys.chain,
            ),
            lua.ClaimArgs(event_id, token, self.lease_s, ref, new_chain_id(), self.chain_ttl_ms),
        )
        status = _s(reply[0])
        if status == "missing":
            padded = [*reply, None, None]
            return Next(_s(padded[1]), _s(padded[2]))
        if status != "claimed":
            return None
        _, attempt, failures, event, url, kind, body, chain, previous = reply
        return Claim(
            endpoint_id=endpoint_id,
            job_id=job_id,
            event_id=event_id,
            token=token,
            attempt=int(attempt),
            failures=int(failures or 0),
            event=loads(event),
            url=_s(url) or "",
            kind="subscription" if _s(kind) == "subscription" else "job",
            body=body or None,
            chain=_s(chain),
            lost_previous=_s(previous) == "delivering",
        )

    def save_body(self, claim: Claim, body: bytes) -> bytes:
        """Keep the bytes of the first attempt; every retry and replay sends these."""
        key = self.keys.delivery(claim.endpoint_id, claim.event_id)
        if self.r.hsetnx(key, "body", body):
            return body
        return self.r.hget(key, "body") or body

    def finish(
        self,
        claim: Claim,
        outcome: str,
        entry: dict[str, Any],
        *,
        wait_s: float = 0.0,
        status: int | None = None,
        error: str = "",
    ) -> Next:
        """Record an attempt's outcome (ok, retry or dead) and its log entry."""
        ref = lane_ref(claim.endpoint_id, claim.job_id)
        reply = lua.FINISH(
            self.r,
            lua.FinishKeys(
                delivery=self.keys.delivery(claim.endpoint_id, claim.event_id),
                lane=self.keys.lane(ref),
                due=self.keys.due,
                dead=self.keys.dead,
                log=self.keys.log(claim.endpoint_id),
                chain=self.keys.chain,
            ),
            lua.FinishArgs(
                event_id=claim.event_id,
                claim_token=claim.token,
                outcome=outcome,
                wait_s=wait_s,
                log_entry=dumps(entry),
                lane_ref=ref,
                delivery_ref=delivery_ref(claim.endpoint_id, claim.event_id),
                lease_s=self.lease_s,
                log_max=self.settings.webhook_log_entries,
                ttl_s=self.ttl_s,
                chain_id=new_chain_id(),
                chain_ttl_ms=self.chain_ttl_ms,
                status="" if status is None else status,
                error=error,
            ),
        )
        if _s(reply[0]) == "ignored":
            return Next()
        return Next(_s(reply[1]), _s(reply[2]))

    def tick(self, chain_id: str | None, *, force: bool = False) -> Tick:
        """Hand out every head that is due; say when to look again and which chain goes on."""
        reply = lua.TICK(
            self.r,
            lua.TickKeys(due=self.keys.due, chain=self.keys.chain),
            lua.TickArgs(
                chain_id=chain_id or "",
                lease_s=self.lease_s,
                limit=TICK_LIMIT,
                lane_prefix=self.keys.lane_prefix,
                new_chain_id=new_chain_id(),
                chain_ttl_ms=self.chain_ttl_ms,
                force="1" if force else "0",
            ),
        )
        if _s(reply[0]) == "superseded":
            return Tick(True, [], None, None)
        wait = _s(reply[1])
        due = []
        rest = reply[3:]
        for i in range(0, len(rest), 2):
            endpoint_id, job_id = _s(rest[i]).split("|", 1)  # type: ignore[union-attr]
            due.append((endpoint_id, job_id, _s(rest[i + 1]) or ""))
        return Tick(False, due, float(wait) if wait is not None else None, _s(reply[2]))

    def replay(self, endpoint_id: str, event_id: str) -> tuple[int, str, Next]:
        """Take a dead delivery back into its lane with a fresh schedule (same webhook-id).

        (1, job id, next) when requeued; 0 when it is not a dead letter; -1 when expired.
        """
        key = self.keys.delivery(endpoint_id, event_id)
        job_id = _s(self.r.hget(key, "job_id")) or ""
        ref = lane_ref(endpoint_id, job_id)
        code, chain = lua.REPLAY(
            self.r,
            lua.ReplayKeys(
                delivery=key,
                lane=self.keys.lane(ref),
                due=self.keys.due,
                dead=self.keys.dead,
                chain=self.keys.chain,
            ),
            lua.ReplayArgs(
                event_id=event_id,
                delivery_ref=delivery_ref(endpoint_id, event_id),
                lane_ref=ref,
                lease_s=self.lease_s,
                ttl_s=self.ttl_s,
                chain_id=new_chain_id(),
                chain_ttl_ms=self.chain_ttl_ms,
            ),
        )
        if int(code) <= 0:
            return int(code), job_id, Next()
        return 1, job_id, Next(event_id if int(code) == 2 else None, _s(chain))

    def note_lost(self, claim: Claim, entry: dict[str, Any]) -> None:
        """Log that the attempt before this claim never reported back (its worker died)."""
        key = self.keys.log(claim.endpoint_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.lpush(key, dumps(entry))
        pipe.ltrim(key, 0, self.settings.webhook_log_entries - 1)
        pipe.expire(key, self.ttl_s)
        pipe.execute()

    def job_of(self, endpoint_id: str, event_id: str) -> str | None:
        return _s(self.r.hget(self.keys.delivery(endpoint_id, event_id), "job_id"))
