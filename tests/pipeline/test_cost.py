"""Never paying twice: the result cache, repeats inside a job, the budget, and the real cost."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from batchline.errors import JobRefused
from batchline.pricing import cost_nusd
from batchline.settings import Settings
from tests.support.jobs import DEFAULTS, check_records, prompts
from tests.support.procs import wait_for


def test_repeats_are_sent_once_and_the_cache_answers_the_next_job(stack: Any) -> None:
    stack.start_hooks()
    base = prompts(40)
    repeats = [{"custom_id": f"again{i}", "prompt": base[i]["prompt"]} for i in range(10)]
    flaky = [
        {"custom_id": f"flaky{i}", "prompt": "wobble [[emulate:errored-once:api_error]]"}
        for i in range(3)
    ]
    first = base + repeats + flaky
    # When a job with the cache on holds ten repeats and three copies of a flaky request
    a = stack.client.submit(
        first, defaults=DEFAULTS, cache=True, on_result="hookapp.on_result", hook_queue="hooks"
    )
    sa = stack.client.wait(a["job_id"], timeout_s=60)
    # Then each distinct request was sent once (the flaky one twice: its retry)
    assert check_records(first, list(stack.client.results(a["job_id"]))) == {"succeeded": 53}
    assert stack.emulator.stats()["requests_received"] == 40 + 1 + 1
    assert sa["deduplicated"] == 12 and sa["cache_hits"] == 0 and sa["saved_usd"] > 0
    flaky_recs = [r for r in stack.client.results(a["job_id"]) if r["custom_id"].startswith("f")]
    assert {r["attempts"] for r in flaky_recs} == {2}

    # When a second job repeats twenty of those requests and adds ten new ones
    second = [{"custom_id": f"b{i}", "prompt": base[i]["prompt"]} for i in range(20)] + prompts(
        10, "new"
    )
    b = stack.client.submit(
        second, defaults=DEFAULTS, cache=True, on_result="hookapp.on_result", hook_queue="hooks"
    )
    sb = stack.client.wait(b["job_id"], timeout_s=60)
    # Then the twenty come from the cache and only ten are sent
    records = list(stack.client.results(b["job_id"]))
    assert check_records(second, records) == {"succeeded": 30}
    assert sb["cache_hits"] == 20 and sum(bool(r.get("cached")) for r in records) == 20
    assert stack.emulator.stats()["requests_received"] == 42 + 10
    assert sb["saved_usd"] > 0 and sb["cost_usd"] < sa["cost_usd"]
    # Every custom_id's hook ran once, cached and repeated ones included
    r = stack.redis.client()
    for job, reqs in ((a, first), (b, second)):
        key, n = f"hooks:{job['job_id']}:results", len(reqs)
        wait_for(lambda key=key, n=n: r.llen(key) >= n, 20, what="hooks")
        calls = Counter(orjson.loads(x)["custom_id"] for x in r.lrange(key, 0, -1))
        assert calls == Counter({q["custom_id"]: 1 for q in reqs})

    # And without the cache, repeats are sent like any request (several samples wanted)
    c = stack.client.submit(second, defaults=DEFAULTS)
    stack.client.wait(c["job_id"], timeout_s=60)
    assert stack.emulator.stats()["requests_received"] == 52 + 30


def test_a_job_over_its_budget_is_refused_before_anything_is_sent(stack: Any) -> None:
    reqs = prompts(200)
    with pytest.raises(JobRefused, match=r"estimated cost \$7\.\d+ exceeds the budget"):
        stack.client.submit(
            reqs, defaults={"model": "claude-opus-4-1", "max_tokens": 1000}, max_cost_usd=0.01
        )
    assert stack.emulator.stats()["calls"]["create"] == 0
    sub = stack.client.submit(reqs[:20], defaults=DEFAULTS, max_cost_usd=1.0)
    final = stack.client.wait(sub["job_id"], timeout_s=60)
    assert final["state"] == "completed" and 0 < final["cost_usd"] <= final["estimated_cost_usd"]


def test_cost_is_tracked_from_usage_with_cache_tokens_at_batch_prices(stack: Any) -> None:
    system = [
        {"type": "text", "text": "You are terse. " * 50, "cache_control": {"type": "ephemeral"}}
    ]
    reqs = prompts(12)
    sub = stack.client.submit(reqs, defaults={**DEFAULTS, "system": system})
    final = stack.client.wait(sub["job_id"], timeout_s=60)
    records = list(stack.client.results(sub["job_id"]))
    usages = [r["message"]["usage"] for r in records]
    assert sum(u["cache_creation_input_tokens"] for u in usages) > 0
    assert sum(u["cache_read_input_tokens"] for u in usages) > 0
    s = Settings()
    expected = sum(cost_nusd(s, r["message"]["model"], r["message"]["usage"]) for r in records)
    assert final["cost_usd"] == round(expected / 1e9, 6)
    for field in (
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ):
        assert final["usage"][field] == sum(u[field] for u in usages)
