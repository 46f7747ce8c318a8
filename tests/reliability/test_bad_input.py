"""Bad input never crashes a worker and never silently drops a request."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchline.errors import JobRefused
from tests.support.jobs import DEFAULTS, check_records, prompts
from tests.support.procs import wait_for


def worker_healthy(st: Any) -> None:
    for w in st.workers:
        assert w.alive(), w.log_text()[-2000:]
        assert "Unrecoverable error" not in w.log_text()


def test_every_kind_of_bad_line_is_named_and_nothing_is_sent(
    stack_factory: Any, tmp_path: Path
) -> None:
    stack = stack_factory(max_request_bytes=32768)
    stack.worker()
    good = orjson.dumps({"custom_id": "fine", "prompt": "ok"})
    lines = [
        good,
        b'{"custom_id": "a", "prompt": "unterminated',  # malformed JSON
        b'{"custom_id": ["x"], "prompt": "hi"}',  # wrong type
        b'{"custom_id": "c", "params": {"model": "m", "max_tokens": 5, "messages": '
        b'[{"role": "user", "content": "x"}], "moderation": true}}',  # unknown field in params
        b'{"custom_id": "d", "prompt": "' + b"z" * 40_000 + b'"}',  # huge line
        b'{"custom_id": "e", "prompt": "caf\xe9"}',  # invalid UTF-8
        b'{"custom_id": "f", "prompt": "hi", "max_tokens": "many"}',  # wrong type
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(JobRefused) as err:
        stack.client.submit(path, defaults=DEFAULTS)
    msg = str(err.value)
    for expected in (
        "line 2: not valid JSON",
        "line 3: custom_id must be a non-empty string",
        "line 4 (c): unknown field(s) in params: moderation",
        "line 5: line is 40032 bytes, over the limit of 32768",
        "line 6: not valid UTF-8",
        "line 7 (f): max_tokens must be an integer of at least 1",
    ):
        assert expected in msg, (expected, msg)
    assert "line 1" not in msg
    assert stack.emulator.stats()["calls"]["create"] == 0
    worker_healthy(stack)


def test_empty_input_and_a_path_outside_the_allowed_directory(
    stack_factory: Any, tmp_path: Path
) -> None:
    allowed = tmp_path / "inputs"
    allowed.mkdir()
    (allowed / "empty.jsonl").write_bytes(b"\n\n")
    (tmp_path / "outside.jsonl").write_bytes(orjson.dumps({"prompt": "x"}) + b"\n")
    st = stack_factory(source_dir=str(allowed))
    st.worker()
    with pytest.raises(JobRefused, match="the input has no requests"):
        st.client.submit_source("empty.jsonl", defaults=DEFAULTS)
    for path in ("../outside.jsonl", str(tmp_path / "outside.jsonl")):
        with pytest.raises(JobRefused, match="outside the allowed directory"):
            st.client.submit_source(path, defaults=DEFAULTS)
    with pytest.raises(JobRefused, match="the input has no requests"):
        st.client.submit([], defaults=DEFAULTS)
    assert st.emulator.stats()["calls"]["create"] == 0
    worker_healthy(st)


def test_unknown_custom_id_and_truncated_result_streams(stack_factory: Any) -> None:
    st = stack_factory("--processing-seconds", "0.3")
    st.worker(concurrency=3)
    st.start_hooks()
    st.emulator.configure(unknown_results_next=1, truncate_results_next=2)
    reqs = prompts(3000)
    sub = st.client.submit(
        reqs, defaults=DEFAULTS, on_result="hookapp.on_result", hook_queue="hooks"
    )
    final = st.client.wait(sub["job_id"], timeout_s=120)
    assert final["counts"]["succeeded"] == 3000 and final["counts"]["total"] == 3000
    assert check_records(reqs, list(st.client.results(sub["job_id"]))) == {"succeeded": 3000}
    r = st.redis.client()
    key = f"hooks:{sub['job_id']}:results"
    wait_for(lambda: r.llen(key) >= 3000, 30, what="hooks")
    calls = Counter(orjson.loads(x)["custom_id"] for x in r.lrange(key, 0, -1))
    assert max(calls.values()) == 1 and len(calls) == 3000
    log = "".join(w.log_text() for w in st.workers)
    assert "results.unknown_custom_id" in log and "never-submitted" in log
    assert "results.interrupted" in log
    assert st.emulator.stats()["calls"]["results"] >= 3  # two cut short, then a whole one
    assert st.emulator.stats()["batches_created"] == 1
    worker_healthy(st)
