"""Reading the event stream as a service: one consumer group, pending first, reclaim, dedupe.

Each service reads `<prefix>:events` through its own consumer group; each of its processes
is one consumer in that group. `read` returns, in this order: entries this consumer was
given and did not acknowledge (it crashed), entries other consumers left idle longer than
`min_idle_s` (they died), then new entries. `ack` remembers the event id, then XACKs.
An event can appear twice (a redelivery after a crash, or a retried XADD), so events
already acknowledged by the group are skipped by id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from batchline.events import Event, decode_entry
from batchline.keys import ConsumerKeys, EventKeys

DEFAULT_SEEN_TTL_S = 86400  # duplicates come within seconds to minutes of the original


@dataclass(frozen=True)
class Delivery:
    """One event handed to this consumer, to acknowledge once handled."""

    entry_id: str
    event: Event


class EventConsumer:
    """One consumer of one consumer group on the fleet's event stream."""

    def __init__(
        self,
        r: redis.Redis,
        group: str,
        consumer: str,
        *,
        prefix: str = "bl",
        start: str = "$",
        min_idle_s: float = 60.0,
        seen_ttl_s: int = DEFAULT_SEEN_TTL_S,
    ):
        self.r = r
        self.group = group
        self.consumer = consumer
        self.stream = EventKeys(prefix).fleet
        self.prefix = prefix
        self.min_idle_ms = int(min_idle_s * 1000)
        self.seen_ttl_s = seen_ttl_s
        self._own_pending = True
        try:
            r.xgroup_create(self.stream, group, id=start, mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def seen_key(self, event_id: str) -> str:
        return ConsumerKeys(self.prefix, self.group).seen(event_id)

    def _entries(self, count: int, block_ms: int | None) -> list[Any]:
        reply: Any
        if self._own_pending:
            reply = self.r.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=count)
            if reply and reply[0][1]:
                return list(reply[0][1])
            self._own_pending = False
        reply = self.r.xautoclaim(
            self.stream, self.group, self.consumer, self.min_idle_ms, "0-0", count=count
        )
        if reply[1]:
            return list(reply[1])
        reply = self.r.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        return list(reply[0][1]) if reply else []

    def read(self, count: int = 100, block_ms: int | None = 5000) -> list[Delivery]:
        """The next events to handle (an empty list after block_ms with nothing new)."""
        out: list[Delivery] = []
        ids: set[str] = set()
        for raw_id, fields in self._entries(count, block_ms):
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            event = decode_entry(fields)
            if event is None or event["id"] in ids or self.r.exists(self.seen_key(event["id"])):
                self.r.xack(self.stream, self.group, entry_id)  # trimmed away, or a duplicate
                continue
            ids.add(event["id"])
            out.append(Delivery(entry_id, event))
        return out

    def ack(self, delivery: Delivery) -> None:
        """The event is handled: remember its id (to skip duplicates), then XACK the entry."""
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.seen_key(delivery.event["id"]), "1", ex=self.seen_ttl_s)
        pipe.xack(self.stream, self.group, delivery.entry_id)
        pipe.execute()
