"""Delivery state in Redis: lanes in order, one owner per head, retries, dead letters, replay."""

from __future__ import annotations

import time
from typing import Any

from batchline import events
from batchline.settings import Settings
from batchline.webhooks.endpoints import Endpoint, endpoint_id
from batchline.webhooks.outbox import Claim, Outbox

URL = "https://hooks.example.com/in"
EP = Endpoint(endpoint_id(URL), URL, "subscription")


def outbox(redis_server: Any, **kw: Any) -> Outbox:
    settings = Settings(redis_url=redis_server.url, **{"webhook_lease_s": 30, **kw})
    return Outbox(redis_server.client(), settings)


def event(job_id: str, n: int) -> events.Event:
    return events.new_event(job_id, "job.progress", {"n": n})


def test_a_lane_delivers_in_order_and_queues_each_event_once(redis_server: Any) -> None:
    box = outbox(redis_server)
    e1, e2, e3 = event("j", 1), event("j", 2), event("j", 3)
    # Given three events of one job for one endpoint, the second queued twice
    first = box.enqueue(EP, e1)
    assert first[0] and first[1].event_id == e1["id"] and first[1].chain
    assert box.enqueue(EP, e2)[1].event_id is None  # behind e1
    assert box.enqueue(EP, e2)[0] is False  # a repeat is a no-op
    box.enqueue(EP, e3)
    # Then only the head can be claimed, once
    assert box.claim(EP.id, "j", e2["id"]) is None
    c1 = box.claim(EP.id, "j", e1["id"])
    assert isinstance(c1, Claim) and c1.attempt == 1
    assert box.claim(EP.id, "j", e1["id"]) is None  # busy: its lease runs
    # and finishing it hands over the next one
    nxt = box.finish(c1, "ok", {"n": 1}, status=200)  # type: ignore[arg-type]
    assert nxt.event_id == e2["id"]
    c2 = box.claim(EP.id, "j", e2["id"])
    assert box.finish(c2, "ok", {}, status=200).event_id == e3["id"]  # type: ignore[arg-type]
    # and another job's lane never waits for this one
    other = event("k", 1)
    assert box.enqueue(EP, other)[1].event_id == other["id"]


def test_a_retry_waits_in_redis_and_the_scheduler_hands_it_out_when_due(
    redis_server: Any,
) -> None:
    box = outbox(redis_server)
    e1 = event("j", 1)
    box.enqueue(EP, e1)
    claim = box.claim(EP.id, "j", e1["id"])
    # Given a failed attempt to be tried again in 0.2 s
    box.finish(claim, "retry", {}, wait_s=0.2, status=500)  # type: ignore[arg-type]
    # Then it is not due now, and a stray early message cannot claim it
    tick = box.tick(None)
    assert tick.due == [] and tick.wait_s is not None and tick.wait_s <= 0.2
    assert box.claim(EP.id, "j", e1["id"]) is None
    # and once due the scheduler hands it out, and its claim carries the body already sent
    box.save_body(claim, b"{}")  # type: ignore[arg-type]
    time.sleep(0.25)
    assert box.tick(None).due == [(EP.id, "j", e1["id"])]
    again = box.claim(EP.id, "j", e1["id"])
    assert again.attempt == 2 and again.failures == 1 and again.body == b"{}"  # type: ignore[union-attr]


def test_a_dead_letter_unblocks_the_lane_and_replays_with_the_same_id(redis_server: Any) -> None:
    box = outbox(redis_server)
    e1, e2 = event("j", 1), event("j", 2)
    box.enqueue(EP, e1)
    box.enqueue(EP, e2)
    claim = box.claim(EP.id, "j", e1["id"])
    # When the head fails its last attempt
    nxt = box.finish(claim, "dead", {}, status=500)  # type: ignore[arg-type]
    # Then the next event goes, and the dead one is listed
    assert nxt.event_id == e2["id"]
    r = box.r
    assert r.zrange(box.keys.dead, 0, -1) == [f"{EP.id}:{e1['id']}".encode()]
    box.finish(box.claim(EP.id, "j", e2["id"]), "ok", {}, status=200)  # type: ignore[arg-type]
    # and a replay puts it back with a fresh schedule, under the same event id
    code, job_id, again = box.replay(EP.id, e1["id"])
    assert (code, job_id, again.event_id) == (1, "j", e1["id"])
    fresh = box.claim(EP.id, "j", e1["id"])
    assert fresh.attempt == 1 and fresh.failures == 0  # type: ignore[union-attr]
    assert box.replay(EP.id, e1["id"])[0] == 0  # not dead any more


def test_an_attempt_whose_worker_died_is_handed_out_after_its_lease(redis_server: Any) -> None:
    box = outbox(redis_server, webhook_timeout_s=0.1, webhook_lease_s=0.2)
    e1 = event("j", 1)
    box.enqueue(EP, e1)
    assert box.claim(EP.id, "j", e1["id"]) is not None
    # When nothing reports back before the lease ends
    time.sleep(0.25)
    # Then the scheduler hands it out again and the next claim knows the last one was lost
    assert box.tick(None).due == [(EP.id, "j", e1["id"])]
    again = box.claim(EP.id, "j", e1["id"])
    assert again.attempt == 2 and again.lost_previous  # type: ignore[union-attr]


def test_one_scheduler_chain_at_a_time(redis_server: Any) -> None:
    box = outbox(redis_server)
    box.enqueue(EP, event("j", 1))
    chain = box.r.get(box.keys.chain).decode()
    # A tick of the live chain goes on; a stale chain's tick stops
    assert box.tick(chain).chain == chain
    assert box.tick("chain_old").superseded
    # A restart replaces the chain; the old one then stops at its next tick
    fresh = box.tick(None, force=True).chain
    assert fresh and fresh != chain and box.tick(chain).superseded
