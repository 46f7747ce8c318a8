"""Building test jobs and checking that every request ended exactly once, with its own answer."""

from __future__ import annotations

from collections import Counter
from typing import Any

DEFAULTS = {"model": "claude-haiku-4-5", "max_tokens": 64}


def prompts(n: int, prefix: str = "q", directive: str = "") -> list[dict[str, Any]]:
    return [
        {"custom_id": f"{prefix}{i}", "prompt": f"question {prefix}{i}{directive}"}
        for i in range(n)
    ]


def prompt_of(req: dict[str, Any]) -> str:
    if "prompt" in req:
        return str(req["prompt"])
    messages = req.get("messages") or req["params"]["messages"]
    return str(messages[-1]["content"])


def check_records(requests: list[dict[str, Any]], records: list[dict[str, Any]]) -> Counter[str]:
    """Every custom_id has exactly one record; every succeeded one answers its own prompt."""
    by_id: dict[str, dict[str, Any]] = {}
    for rec in records:
        assert rec["custom_id"] not in by_id, f"two records for {rec['custom_id']}"
        by_id[rec["custom_id"]] = rec
    expected = {r["custom_id"] for r in requests}
    assert set(by_id) == expected, (
        f"missing {sorted(expected - set(by_id))[:5]}, extra {sorted(set(by_id) - expected)[:5]}"
    )
    states: Counter[str] = Counter()
    for req in requests:
        rec = by_id[req["custom_id"]]
        assert rec["state"] in ("succeeded", "failed", "canceled", "rejected"), rec
        states[rec["state"]] += 1
        if rec["state"] == "succeeded":
            text = rec["message"]["content"][0]["text"]
            assert text == "echo: " + prompt_of(req), (req["custom_id"], text)
        elif rec["state"] == "failed":
            assert rec["error"]["type"], rec
    return states


def submit_with_hooks(st: Any, reqs: list[dict[str, Any]]) -> str:
    """Submit with an on_result hook on the hooks queue (the stack's hook app); the job id."""
    sub = st.client.submit(
        reqs, defaults=DEFAULTS, on_result="hookapp.on_result", hook_queue="hooks"
    )
    return str(sub["job_id"])


def chunk_field(st: Any, job_id: str, name: str, chunk: int = 0) -> str:
    """One field of a chunk's hash in Redis ("" when unset)."""
    raw = st.redis.client().hget(f"bl:job:{job_id}:c:{chunk}", name)
    return raw.decode() if raw else ""
