"""Secrets and prompts stay where they belong: the API key nowhere, prompts only in the job's
own (compressed) claim-check hashes; JSON only from the broker; job data expires."""

from __future__ import annotations

import base64
import contextlib
import zlib
from typing import Any

import orjson
import redis
from celery import Celery

from tests.support.jobs import DEFAULTS, prompts
from tests.support.procs import API_KEY, wait_for

MARK = "zebra-marmalade-7f3a-confidential"
PASSWORD = "s3cret-redis-pass-9"


def values(r: redis.Redis, key: bytes) -> list[bytes]:
    kind = r.type(key)
    if kind == b"string":
        return [r.get(key) or b""]
    if kind == b"hash":
        return [x for kv in r.hgetall(key).items() for x in kv]
    if kind == b"list":
        return r.lrange(key, 0, -1)
    if kind == b"set":
        return list(r.smembers(key))
    if kind == b"zset":
        return r.zrange(key, 0, -1)
    if kind == b"stream":
        return [x for _, fields in r.xrange(key) for kv in fields.items() for x in kv]
    return []


def readable(value: bytes) -> list[bytes]:
    """The value, plus what it holds once decompressed or base64-decoded (broker bodies)."""
    out = [value]
    with contextlib.suppress(zlib.error):
        out.append(zlib.decompress(value))
    try:
        msg = orjson.loads(value)
        if isinstance(msg, dict) and isinstance(msg.get("body"), str):
            out.append(base64.b64decode(msg["body"]))
    except (orjson.JSONDecodeError, ValueError):
        pass
    return out


def scan(r: redis.Redis) -> tuple[list[bytes], list[bytes]]:
    """(keys holding the API key anywhere, keys holding the prompt in readable form)."""
    with_key, with_prompt = [], []
    for key in r.scan_iter(count=1000):
        for value in values(r, key):
            forms = readable(value)
            if API_KEY.encode() in key or any(API_KEY.encode() in f for f in forms):
                with_key.append(key)
            if (
                MARK.encode() in key
                or MARK.encode() in value
                or any(
                    MARK.encode() in f for f in forms[1:] if not key.endswith((b":req", b":res"))
                )
            ):
                with_prompt.append(key)
    return with_key, with_prompt


def test_no_api_key_anywhere_and_prompts_only_in_the_claim_check(
    redis_factory: Any, stack_factory: Any
) -> None:
    # Given Redis with a password, a worker per stage, hooks, and prompts carrying a marker
    server = redis_factory("pw-redis", password=PASSWORD)
    st = stack_factory(
        "--processing-seconds",
        "2",
        redis=server,
        max_batch_requests=50,
        retention_s=120,
        events_retention_s=120,
        webhook_retry_schedule_s=[1, 2],
    )
    st.worker(queues=["ingest", "events"], name="ingest")
    st.worker(queues=["api"], name="api")
    st.worker(queues=["results"], name="results")
    reqs = prompts(150, directive=f" {MARK}")
    sub = st.client.submit(reqs, defaults=DEFAULTS, metadata={"team": "search"})
    r = server.client()
    # When Redis is scanned while batches are in flight and task messages are queued
    wait_for(lambda: st.emulator.stats()["batches_created"] == 3, 30, what="batches")
    mid_key, mid_prompt = scan(r)
    final = st.client.wait(sub["job_id"], timeout_s=60)
    end_key, end_prompt = scan(r)
    # Then the API key is nowhere, and the prompt is only inside the job's own hashes
    assert final["state"] == "completed"
    assert (mid_key, end_key) == ([], [])
    assert (mid_prompt, end_prompt) == ([], [])
    # The claim check does hold the work, compressed (so readable with zlib, as designed).
    stored = r.hvals(f"bl:job:{sub['job_id']}:res")
    assert any(MARK.encode() in zlib.decompress(v) for v in stored)
    logs = "".join(w.log_text() for w in st.workers)
    assert API_KEY not in logs and MARK not in logs and PASSWORD not in logs

    # And the job's data expires after the retention (set by the finalizer just after it
    # marks the job completed, so possibly a moment after wait() returns)
    def ttls() -> dict[bytes, int]:
        return {k: r.ttl(k) for k in r.scan_iter(f"bl:job:{sub['job_id']}*")}

    def unexpiring() -> dict[bytes, int]:
        return {k: t for k, t in ttls().items() if not 0 < t <= 120}

    assert ttls()
    wait_for(lambda: not unexpiring(), 10, what="every key of the job to expire")


def test_only_json_is_accepted_from_the_broker(stack: Any) -> None:
    # Given a message serialized with pickle on Batchline's ingest queue
    rogue = Celery("rogue", broker=stack.redis.url)
    rogue.conf.update(task_serializer="pickle", accept_content=["pickle"])
    rogue.send_task("batchline.get_job", args=("job-x",), queue="ingest", serializer="pickle")
    # Then the worker refuses to decode it and runs nothing
    wait_for(lambda: "untrusted content" in stack.workers[0].log_text(), 20, what="the refusal")
    log = stack.workers[0].log_text()
    assert "Task batchline.get_job" not in log
    assert stack.workers[0].alive()
