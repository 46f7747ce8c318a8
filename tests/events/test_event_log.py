"""The event log in Redis Streams: both streams, once per event id, trimmed by age only."""

from __future__ import annotations

import time
from typing import Any

from batchline import events
from batchline.consumer import EventConsumer
from batchline.events import WEBHOOK_GROUP, EventKeys
from batchline.wire import dumps

KEYS = EventKeys("bl")
RETENTION_S = 60


def emit(r: Any, job_id: str, type_: str, **data: Any) -> events.Event:
    event = events.new_event(job_id, type_, {"metadata": None, **data})
    events.emit(r, KEYS, event, RETENTION_S)
    return event


def test_an_event_goes_to_both_streams_once_even_when_the_call_is_repeated(
    redis_server: Any,
) -> None:
    r = redis_server.client()
    # Given an event emitted, then emitted again with the same id (a retried call)
    event = events.new_event("job_a", "job.created", {"metadata": {"team": "x"}, "accepted": 3})
    first = events.emit(r, KEYS, event, RETENTION_S)
    again = events.emit(r, KEYS, event, RETENTION_S)
    # Then it is in the fleet stream and the job's stream exactly once
    assert first[0] is not None and again == (None, False)
    assert [e for _, e in events.job_events(r, KEYS, "job_a")] == [event]
    assert r.xlen(KEYS.fleet) == 1
    # and the job's stream expires with the retention; the dispatcher's group exists
    assert 0 < r.ttl(KEYS.job("job_a")) <= RETENTION_S
    assert [g["name"] for g in r.xinfo_groups(KEYS.fleet)] == [WEBHOOK_GROUP.encode()]
    assert event["timestamp"].endswith("Z") and event["id"].startswith("evt_")


def test_only_one_dispatch_is_asked_for_while_one_is_queued(redis_server: Any) -> None:
    r = redis_server.client()
    wakes = []
    for i in range(5):
        ev = events.new_event("job_b", "job.progress", {"n": i})
        wakes.append(events.emit(r, KEYS, ev, RETENTION_S)[1])
    assert wakes == [True, False, False, False, False]
    r.delete(KEYS.dispatch_queued)  # what a dispatcher does before its last look
    assert events.emit(r, KEYS, events.new_event("job_b", "job.progress", {}), RETENTION_S)[1]


def test_streams_are_trimmed_by_age_never_by_length(redis_server: Any) -> None:
    r = redis_server.client()
    # Given a group that has read nothing, 300 entries older than the retention and
    # 2,000 recent ones
    r.xgroup_create(KEYS.fleet, "slow", id="0", mkstream=True)
    old_ms = int((time.time() - 2 * RETENTION_S) * 1000)
    for i in range(300):
        r.xadd(KEYS.fleet, {"event": dumps({"old": i})}, id=f"{old_ms}-{i + 1}")
    for i in range(2000):
        emit(r, f"job_{i % 7}", "job.progress", n=i)
    # Then old entries are trimmed (whole stream nodes at a time: MINID ~) and every
    # recent one is kept for the slow group, however many there are
    entries = r.xrange(KEYS.fleet)
    old_left = [e for e in entries if b"old" in e[1][b"event"]]
    assert len(old_left) < 300
    assert len(entries) - len(old_left) == 2000
    unread = r.xreadgroup("slow", "c", {KEYS.fleet: ">"}, count=5000)[0][1]
    assert sum(1 for e in unread if b"old" not in e[1][b"event"]) == 2000


def test_a_consumer_reads_pending_first_reclaims_idle_and_skips_duplicates(
    redis_server: Any,
) -> None:
    r = redis_server.client()
    a = EventConsumer(r, "billing", "a", start="0", min_idle_s=0.2)
    b = EventConsumer(r, "billing", "b", start="0", min_idle_s=0.2)
    sent = [emit(r, "job_c", "job.progress", n=i) for i in range(6)]
    # A retried XADD outside the EMIT script would write the same event twice
    r.xadd(KEYS.fleet, {"event": dumps(sent[2])})
    r.xadd(KEYS.fleet, {"event": dumps(sent[4])})
    # and entries that are not events are skipped, not fatal
    r.xadd(KEYS.fleet, {"event": b"not json"})
    r.xadd(KEYS.fleet, {"something": b"else"})
    # When consumer a reads three events and dies before acknowledging them
    taken = a.read(count=3, block_ms=100)
    assert [d.event["id"] for d in taken] == [e["id"] for e in sent[:3]]
    handled: list[str] = []
    # and b handles everything new, then reclaims a's entries once idle
    time.sleep(0.3)
    while batch := b.read(count=2, block_ms=100):
        for d in batch:
            handled.append(d.event["id"])
            b.ack(d)
    # Then every event was handled exactly once, duplicates included
    assert sorted(handled) == sorted(e["id"] for e in sent)
    assert r.xpending(KEYS.fleet, "billing")["pending"] == 0
    # and a restarted a finds nothing left to do
    assert EventConsumer(r, "billing", "a").read(block_ms=50) == []
