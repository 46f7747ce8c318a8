"""Webhooks end to end: real redis-server, real celery workers, a real receiver on loopback."""

from __future__ import annotations

import gc
import os
import subprocess
import time
from typing import Any

import orjson
import pytest

from batchline import events
from batchline.consumer import EventConsumer
from batchline.devstack import BIN
from batchline.errors import JobRefused
from batchline.events import EventKeys
from batchline.settings import Settings
from batchline.webhooks import admin
from batchline.webhooks.endpoints import endpoint_id
from tests.events.conftest import FAST_HOOKS, JOB_SECRET, OLD_SUB_SECRET, SUB_SECRET, publish
from tests.events.receiver import Receiver, always_ok
from tests.support.jobs import DEFAULTS, prompts
from tests.support.procs import wait_for

KEYS = EventKeys("bl")


def cli(stack: Any, *args: str, timeout: float = 30) -> str:
    out = subprocess.run(
        [str(BIN / "batchline"), *args],
        env={**os.environ, **stack.env},
        capture_output=True,
        timeout=timeout,
        check=True,
    )
    return out.stdout.decode()


def sub(url: str, **kw: Any) -> dict[str, Any]:
    return {"url": url, "secret": SUB_SECRET, **kw}


def test_a_jobs_events_reach_its_webhook_and_a_subscription_signed_once_and_in_order(
    stack_factory: Any, receiver: Receiver
) -> None:
    # Given a receiver for a job's own webhook, and a subscription to every event whose
    # secret is being rotated (the receiver already checks only the new one)
    receiver.secrets |= {"/job": JOB_SECRET, "/all": SUB_SECRET}
    everything = {
        "url": receiver.url("/all"),
        "secret": OLD_SUB_SECRET,
        "secondary_secret": SUB_SECRET,
        "include_bodies": True,
    }
    st = stack_factory(max_batch_requests=4, webhook_subscriptions=[everything], **FAST_HOOKS)
    st.worker(concurrency=4)
    r = st.redis.client()
    audit = EventConsumer(r, "audit", "audit-1")
    # When a job of 10 requests (three batches) asks for result events and a webhook
    job = st.client.submit(
        prompts(10),
        defaults=DEFAULTS,
        webhook_url=receiver.url("/job"),
        result_events=True,
        metadata={"team": "search"},
    )
    job_id = job["job_id"]
    follow = subprocess.Popen(
        [str(BIN / "batchline"), "events", job_id, "--follow", "--json"],
        env={**os.environ, **st.env},
        stdout=subprocess.PIPE,
    )
    st.client.wait(job_id, timeout_s=60)
    stream = [e for _, e in events.job_events(r, KEYS, job_id)]
    ids = [e["id"] for e in stream]
    wait_for(
        lambda: all(len(receiver.delivered(p)) >= len(ids) for p in ("/job", "/all")),
        30,
        what="every event at both endpoints",
    )
    # Then the job's events are the ones a caller cares about, each carrying the metadata
    types = [e["type"] for e in stream]
    assert types[0] == "job.created" and types[-1] == "job.completed"
    assert types.count("batch.created") == types.count("batch.ended") == 3
    assert types.count("result.succeeded") == 10 and "job.progress" in types
    assert all(e["data"]["metadata"] == {"team": "search"} for e in stream)
    assert len(set(ids)) == len(ids)
    # and both endpoints got every event exactly once, in order, verified by the package,
    # the webhook-id being the event id
    for path in ("/job", "/all"):
        calls = receiver.at(path)
        assert all(c.verified and c.status == 200 for c in calls)
        assert [c.webhook_id for c in calls] == ids
        assert [e["id"] for e in receiver.delivered(path)] == ids
    # Results go by reference, with the record only to the subscription that asked for it
    job_results = [e for e in receiver.delivered("/job") if e["type"] == "result.succeeded"]
    all_results = [e for e in receiver.delivered("/all") if e["type"] == "result.succeeded"]
    assert all("record" not in e["data"] and e["data"]["custom_id"] for e in job_results)
    assert all(e["data"]["record"]["custom_id"] == e["data"]["custom_id"] for e in all_results)
    assert all(e["data"]["record"]["message"]["content"] for e in all_results)
    # `batchline events JOB --follow` printed the same events and stopped at the end
    out, _ = follow.communicate(timeout=20)
    assert [orjson.loads(line)["id"] for line in out.splitlines()] == ids
    # A consumer group that existed before the job sees each of its events once
    seen: list[str] = []
    while batch := audit.read(count=7, block_ms=200):
        for d in batch:
            if d.event["data"]["job_id"] == job_id:
                seen.append(d.event["id"])
            audit.ack(d)
    assert seen == ids


def test_a_receiver_that_fails_twice_gets_the_event_once_with_one_webhook_id(
    stack_factory: Any, receiver: Receiver
) -> None:
    # Given a receiver that answers 500 twice per webhook-id, then 200, and another that
    # asks for a pause with Retry-After once
    receiver.secrets |= {"/flaky": SUB_SECRET, "/busy": SUB_SECRET}
    receiver.policies["/flaky"] = lambda call, n: (500, {}) if n <= 2 else (200, {})
    receiver.policies["/busy"] = lambda c, n: (429, {"retry-after": "2"}) if n == 1 else (200, {})
    hooks = [sub(receiver.url("/flaky")), sub(receiver.url("/busy"), event_types=["job.created"])]
    st = stack_factory(webhook_subscriptions=hooks, **FAST_HOOKS)
    st.worker(queues=["events"])
    # When two events of one job are published
    first = publish(st, "job_flaky", "job.created", accepted=1)
    second = publish(st, "job_flaky", "job.completed", counts={"succeeded": 1})
    wait_for(lambda: len(receiver.delivered("/flaky")) == 2, 30, what="both delivered")
    # Then each was tried three times under its own webhook-id, the second only after the
    # first was delivered, and each was accepted exactly once
    calls = receiver.at("/flaky")
    assert [(c.webhook_id, c.status) for c in calls] == [
        (first["id"], 500),
        (first["id"], 500),
        (first["id"], 200),
        (second["id"], 500),
        (second["id"], 500),
        (second["id"], 200),
    ]
    assert all(c.verified for c in calls)
    # on the growing schedule (0.3 s, then 0.6 s)
    assert calls[1].at - calls[0].at >= 0.25 and calls[2].at - calls[1].at >= 0.55
    # and the delivery log shows every attempt with its status and next try
    settings = Settings(redis_url=st.redis.url)
    entries = admin.log(st.redis.client(), settings, endpoint_id(receiver.url("/flaky")))
    mine = [e for e in reversed(entries) if e["event_id"] == first["id"]]
    assert [(e["attempt"], e["outcome"], e["status"]) for e in mine] == [
        (1, "retry", 500),
        (2, "retry", 500),
        (3, "delivered", 200),
    ]
    assert mine[0]["next_at"] and mine[2]["next_at"] is None
    # The other endpoint waited as long as its Retry-After asked, not the schedule's 0.3 s,
    # and only got the type it subscribed to
    wait_for(lambda: receiver.delivered("/busy"), 30, what="the paused delivery")
    busy = receiver.at("/busy")
    assert [(c.webhook_id, c.status) for c in busy] == [(first["id"], 429), (first["id"], 200)]
    assert busy[1].at - busy[0].at >= 1.9
    assert admin.dead_letters(st.redis.client(), settings) == []
    # A second delivery of any of the tasks is a no-op: nothing is sent again
    flaky = endpoint_id(receiver.url("/flaky"))
    st.client.app.send_task("batchline.deliver_webhook", args=(flaky, "job_flaky", first["id"]))
    st.client.app.send_task("batchline.dispatch_event")
    st.client.app.send_task("batchline.schedule_webhooks")
    time.sleep(1)
    assert len(receiver.at("/flaky")) == 6 and len(receiver.at("/busy")) == 2


def test_a_receiver_that_never_succeeds_ends_in_dead_letters_and_replay_delivers_it(
    stack_factory: Any, receiver: Receiver
) -> None:
    # Given a receiver that is down, and two events of one job
    receiver.secrets["/down"] = SUB_SECRET
    receiver.policies["/down"] = lambda c, n: (503, {})
    st = stack_factory(webhook_subscriptions=[sub(receiver.url("/down"))], **FAST_HOOKS)
    st.worker(queues=["events"])
    first = publish(st, "job_down", "job.created", accepted=1)
    second = publish(st, "job_down", "job.canceled", counts={})
    # When each has had its three attempts
    settings = Settings(redis_url=st.redis.url)
    r = st.redis.client()
    wait_for(lambda: len(admin.dead_letters(r, settings)) == 2, 30, what="two dead letters")
    # Then both are dead letters, tried in order, never under another webhook-id
    dead = orjson.loads(cli(st, "webhooks", "dead", "--json"))
    assert [d["event_id"] for d in dead] == [first["id"], second["id"]]
    assert all(d["attempts"] == 3 and d["last_status"] == 503 for d in dead)
    assert [c.webhook_id for c in receiver.at("/down")] == [first["id"]] * 3 + [second["id"]] * 3
    # When the receiver is back and an operator replays them
    receiver.policies["/down"] = always_ok
    out = cli(st, "webhooks", "replay", "--all")
    assert out.count("queued") == 2
    # Then both arrive, with their original ids and bodies, and no dead letter is left
    wait_for(lambda: len(receiver.delivered("/down")) == 2, 30, what="replayed deliveries")
    assert [e["id"] for e in receiver.delivered("/down")] == [first["id"], second["id"]]
    bodies = {c.webhook_id: c.body for c in receiver.at("/down")}
    assert orjson.loads(bodies[first["id"]])["data"]["accepted"] == 1
    assert admin.dead_letters(r, settings) == []


def test_loopback_and_private_urls_are_refused_unless_allowed(
    stack_factory: Any, receiver: Receiver
) -> None:
    # Given workers that allow neither loopback nor private addresses
    receiver.secrets["/lo"] = SUB_SECRET
    strict = {**FAST_HOOKS, "webhook_allow_loopback": False}
    st = stack_factory(webhook_subscriptions=[sub(receiver.url("/lo"))], **strict)
    st.worker(queues=["ingest", "events"])
    # Then a job's webhook_url on loopback or a private network is refused at submit
    for url, why in (
        (receiver.url("/job"), "loopback"),
        ("http://10.20.30.40/hook", "private"),
        ("http://[::ffff:127.0.0.1]:8080/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
    ):
        with pytest.raises(JobRefused, match=why):
            st.client.submit(prompts(1), defaults=DEFAULTS, webhook_url=url)
    # The refused calls' results sit in reference cycles (through the tracebacks); their
    # finalizers talk to Redis, so collect them while this stack's Redis still runs.
    gc.collect()
    # and a configured subscription on loopback is refused at delivery: nothing is sent
    event = publish(st, "job_lo", "job.created", accepted=1)
    settings = Settings(redis_url=st.redis.url)
    dead = wait_for(lambda: admin.dead_letters(st.redis.client(), settings), 30)
    assert dead[0]["event_id"] == event["id"] and "loopback" in dead[0]["last_error"]
    assert receiver.at("/lo") == []


def test_a_worker_killed_mid_delivery_leads_to_a_retry_not_a_loss(
    stack_factory: Any, receiver: Receiver
) -> None:
    # Given a receiver that holds the first request open
    receiver.secrets["/slow"] = SUB_SECRET
    receiver.policies["/slow"] = lambda c, n: (0, {}) if n == 1 else (200, {})
    st = stack_factory(webhook_subscriptions=[sub(receiver.url("/slow"))], **FAST_HOOKS)
    first = st.worker(queues=["events"], name="w1")
    event = publish(st, "job_kill", "job.completed", counts={})
    wait_for(lambda: receiver.at("/slow"), 60, what="the first attempt")
    # When the worker dies mid-delivery and another one starts
    first.kill()
    st.worker(queues=["events"], name="w2")
    # Then the delivery is tried again, under the same webhook-id, and succeeds
    wait_for(lambda: receiver.delivered("/slow"), 90, what="the retried delivery")
    assert [c.webhook_id for c in receiver.at("/slow")] == [event["id"], event["id"]]
    settings = Settings(redis_url=st.redis.url)
    log = admin.log(st.redis.client(), settings, endpoint_id(receiver.url("/slow")))
    assert [e["outcome"] for e in reversed(log)] == ["lost", "delivered"]
