"""Each chunk becomes one batch, proven ours, in the world around one client: a workspace
shared with another application, creates answered 5xx after the batch was made, two creates
racing for one chunk, an API clock apart from ours, a chunk the API refuses as too large."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import anthropic
import pytest
import redis

from batchline import api
from batchline.emulator.wire import key_id
from batchline.messaging.dispatch import CeleryDispatcher
from batchline.pipeline.context import Context
from batchline.pipeline.create import chunk_body, record_created
from batchline.settings import Settings
from batchline.store import Store
from tests.support.jobs import DEFAULTS, check_records, prompts
from tests.support.procs import API_KEY, wait_for

OTHER_KEY = "sk-test-another-application-0987654321"
OURS = key_id(API_KEY)
THEIRS = key_id(OTHER_KEY)


def lose_answers(st: Any, n: int, status: int | str = "lost", **extra: Any) -> None:
    """The next n creates made with Batchline's key lose their answer (the batch is made)."""
    fault = {"endpoint": "create", "status": status, "key_id": OURS, **extra}
    st.emulator.configure(fail_next=[fault] * n)


def our_batches(stats: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in stats["batches"] if b["key_id"] == OURS]


def each_request_sent_once(st: Any, requests: int) -> None:
    stats = st.emulator.stats()
    ours = our_batches(stats)
    digests = Counter(b["custom_ids_digest"] for b in ours)
    assert max(digests.values()) == 1, "a chunk's requests were sent twice"
    assert stats["by_key"][OURS]["requests_received"] == requests


class AnotherApplication:
    """Another client on the same workspace, creating batches of `size` requests until
    stopped; its creates never stop on an error (some may lose their answer too)."""

    def __init__(self, base_url: str, size: int, every_s: float = 0.4):
        self.client = anthropic.Anthropic(base_url=base_url, api_key=OTHER_KEY, max_retries=0)
        self.size = size
        self.every_s = every_s
        self.stop = threading.Event()
        self.made = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> AnotherApplication:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            requests = [
                {
                    "custom_id": f"theirs-{n}-{j}",
                    "params": {
                        "model": "claude-haiku-4-5",
                        "max_tokens": 16,
                        "messages": [{"role": "user", "content": f"their question {n}-{j}"}],
                    },
                }
                for j in range(self.size)
            ]
            try:
                self.client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
                self.made += 1
            except anthropic.APIError:
                pass
            n += 1
            self.stop.wait(self.every_s)


def test_another_application_on_the_workspace_never_has_a_batch_adopted_or_canceled(
    stack_factory: Any,
) -> None:
    # Given a workspace shared with another application that keeps creating batches of
    # exactly Batchline's chunk size, and three of Batchline's creates losing their answer
    # (the default create_settle_s: the wait a user meets)
    st = stack_factory(
        "--processing-seconds",
        "1",
        "--workspaces",
        f"acme={API_KEY},{OTHER_KEY}",
        max_batch_requests=50,
    )
    st.worker(concurrency=3)
    st.start_beat()
    reqs = prompts(300)
    with AnotherApplication(st.emulator.base_url, size=50) as theirs:
        wait_for(lambda: theirs.made >= 3, 20, what="the other application's batches")
        lose_answers(st, 3)
        # When a six-batch job runs among them
        sub = st.client.submit(reqs, defaults=DEFAULTS)
        final = st.client.wait(sub["job_id"], timeout_s=180)
        made_meanwhile = theirs.made
    # Then every request has its own answer, sent once
    assert final["state"] == "completed"
    assert check_records(reqs, list(st.client.results(sub["job_id"]))) == {"succeeded": 300}
    each_request_sent_once(st, 300)
    stats = st.emulator.stats()
    assert stats["faults_by_source"]["fail_next"] == 3
    assert stats["by_key"][OURS]["batches_created"] == 6
    # And none of the other application's batches was adopted, canceled or read past one line
    theirs_batches = [b for b in stats["batches"] if b["key_id"] == THEIRS]
    assert len(theirs_batches) >= made_meanwhile >= 10
    assert not any(b["cancel_requested"] for b in theirs_batches)
    assert all(b["results_downloads"] <= 1 for b in theirs_batches)
    adopted = {b["batch_id"] for b in final["batches"]}
    assert not adopted & {b["id"] for b in theirs_batches}
    assert final["duplicates_canceled"] == 0


def _in_process(st: Any) -> Context:
    """A pipeline context in the test process, on the stack's Redis, emulator and broker."""
    settings = Settings(redis_url=st.redis.url)
    r = redis.Redis.from_url(settings.state)
    return Context(
        settings=settings,
        store=Store(r, settings),
        dispatch=CeleryDispatcher(st.client.app, r, same_redis=True),
        client_factory=lambda: anthropic.Anthropic(
            base_url=st.emulator.base_url, api_key=API_KEY, max_retries=0
        ),
    )


@pytest.mark.parametrize("order", ["first-answer-first", "second-answer-first"])
def test_two_batches_made_for_one_chunk_the_second_is_canceled_and_counted(
    stack_factory: Any, order: str
) -> None:
    # Given a job whose chunk is `creating` and two creates for it that both made a batch
    # (a create lease ran out while the API still read a large body, and another worker
    # took the chunk over)
    st = stack_factory("--processing-seconds", "2")
    st.worker(queues=["ingest", "events"], name="ingest")
    reqs = prompts(30)
    job_id = st.client.submit(reqs, defaults=DEFAULTS)["job_id"]
    ctx = _in_process(st)
    assert ctx.store.transition(job_id, 0, "pending", "creating")
    chunk = ctx.store.chunk(job_id, 0)
    assert chunk is not None
    first = api.create(ctx.client, chunk_body(ctx, chunk, lambda: None))
    second = api.create(ctx.client, chunk_body(ctx, chunk, lambda: None))
    # When their answers are recorded in either order
    arrivals = [first, second] if order == "first-answer-first" else [second, first]
    for batch in arrivals:
        record_created(ctx, chunk, batch, reconciled=False)
    st.worker(queues=["api", "results"], name="rest")
    final = st.client.wait(job_id, timeout_s=60)
    # Then the batch recorded first is the chunk's, the other is canceled and counted once
    kept, extra = arrivals
    assert [b["batch_id"] for b in final["batches"]] == [kept.id]
    assert final["duplicates_canceled"] == 1
    wait_for(
        lambda: {b["id"]: b for b in st.emulator.stats()["batches"]}[extra.id]["cancel_requested"],
        30,
        what="the second batch's cancel",
    )
    assert check_records(reqs, list(st.client.results(job_id))) == {"succeeded": 30}
    # And recording either answer again changes nothing
    record_created(ctx, chunk, extra, reconciled=False)
    assert st.client.status(job_id)["duplicates_canceled"] == 1


def test_a_5xx_that_comes_after_the_batch_was_made_is_reconciled_not_created_again(
    stack_factory: Any,
) -> None:
    # Given the SDK's own retries on (a user's setting), and creates that make their batch
    # and then answer 500, 529 and a gateway timeout
    st = stack_factory("--processing-seconds", "0.5", max_batch_requests=40, sdk_max_retries=2)
    st.worker(concurrency=3)
    st.start_beat()
    faults = [
        {"endpoint": "create", "status": status, "after_create": True, "key_id": OURS}
        for status in (500, 529, 504)
    ]
    st.emulator.configure(fail_next=faults)
    reqs = prompts(120)
    # When a three-batch job runs
    sub = st.client.submit(reqs, defaults=DEFAULTS)
    final = st.client.wait(sub["job_id"], timeout_s=150)
    # Then each answer was taken as "outcome unknown", the batch found, none made twice
    assert check_records(reqs, list(st.client.results(sub["job_id"]))) == {"succeeded": 120}
    each_request_sent_once(st, 120)
    stats = st.emulator.stats()
    assert stats["faults_by_source"]["fail_next_after_create"] == 3
    assert stats["by_key"][OURS]["batches_created"] == 3 == len(final["batches"])
    log = "".join(w.log_text() for w in st.workers)
    assert log.count("batch.create_unknown") == 3
    assert log.count("batch.reconciled") == 3


def test_a_lost_answer_is_found_again_when_the_apis_clock_is_not_ours(stack_factory: Any) -> None:
    # Given an API whose clock runs 15 minutes ahead of Redis's (and the workers'), and
    # two creates that lose their answer
    st = stack_factory(
        "--processing-seconds",
        "0.5",
        "--clock-offset-s",
        "900",
        max_batch_requests=25,
        # The settle wait (30 s by default) is run as users have it in the tests above;
        # this one is about the window in the API's clock.
        create_settle_s=3,
    )
    st.worker(concurrency=3)
    lose_answers(st, 2)
    reqs = prompts(75)
    sub = st.client.submit(reqs, defaults=DEFAULTS)
    final = st.client.wait(sub["job_id"], timeout_s=150)
    # Then the offset was measured from the API's answers and each batch found again
    assert check_records(reqs, list(st.client.results(sub["job_id"]))) == {"succeeded": 75}
    each_request_sent_once(st, 75)
    assert len(final["batches"]) == 3


def test_a_chunk_refused_as_too_large_is_split_and_carries_on(stack_factory: Any) -> None:
    # Given an API that takes at most 40 requests a batch, and chunks of 100
    st = stack_factory(
        "--processing-seconds", "0.3", "--max-requests", "40", max_batch_requests=100
    )
    st.worker(concurrency=3)
    reqs = prompts(200)
    sub = st.client.submit(reqs, defaults=DEFAULTS)
    final = st.client.wait(sub["job_id"], timeout_s=90)
    # Then each chunk was split in halves until the API took them, every request sent once
    assert final["state"] == "completed"
    assert check_records(reqs, list(st.client.results(sub["job_id"]))) == {"succeeded": 200}
    stats = st.emulator.stats()
    assert stats["responses_by_status"]["413"] == 6  # 100, 100, then four of 50
    assert sorted(b["request_count"] for b in stats["batches"]) == [25] * 8
    assert stats["requests_received"] == 200
    states = Counter(b["status"] for b in final["batches"])
    assert states == {"split": 6, "done": 8}
