"""In-process result handlers (batchline.handlers): called once per request on the results
worker, effectively once across redeliveries, a failing call kept apart from the rest."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson
import pytest

from batchline.errors import JobRefused
from batchline.handlers import handler_errors
from batchline.messaging.names import TaskName
from tests.support.jobs import DEFAULTS, prompts
from tests.support.procs import wait_for

HANDLER = "tests.support.handlers:record"


def _calls(r: Any, job_id: str) -> Counter[str]:
    return Counter(orjson.loads(x)["custom_id"] for x in r.lrange(f"handled:{job_id}", 0, -1))


def test_a_handler_runs_once_per_request_and_a_failing_one_keeps_its_error(
    stack_factory: Any,
) -> None:
    st = stack_factory(handler_attempts=2)
    st.worker()
    # A handler that is not there is refused at submit, naming it.
    for path in (
        "tests.support.nosuch:record",
        "tests.support.handlers:missing",
        "tests.support.handlers:not_callable",
        "not a path",
    ):
        with pytest.raises(JobRefused, match="handler"):
            st.client.submit(prompts(2), defaults=DEFAULTS, handler=path, fresh=True)

    reqs = prompts(30) + prompts(2, "boom")
    sub = st.client.submit(reqs, defaults=DEFAULTS, handler=HANDLER)
    job_id = sub["job_id"]
    final = st.client.wait(job_id, timeout_s=60)
    # The job ends once its handler calls have: each request once, a raising one twice.
    assert final["counts"]["succeeded"] == 32
    assert (final["handled"], final["handler_failed"]) == (32, 2)
    r = st.redis.client()
    calls = _calls(r, job_id)
    assert calls == {**{f"q{i}": 1 for i in range(30)}, "boom0": 2, "boom1": 2}
    errors = handler_errors(st.client.store, job_id)
    assert errors == {f"boom{i}": f"RuntimeError: cannot take boom{i}" for i in range(2)}

    # Redelivered results: a finished call is not made again; one whose worker died after
    # recording (not marked done), or while calling (an old claim), is made once.
    keys = st.client.store.keys(job_id)
    r.srem(keys.handled, "q1", "q2")
    r.zadd(keys.handling, {"q2": time.time() - 1000})
    batch_id = final["batches"][0]["batch_id"]
    for cid in ("q0", "q1", "q2", "q3", "boom0"):
        st.client.app.send_task(TaskName.PROCESS_RESULT.value, args=(job_id, 0, batch_id, cid))
    wait_for(lambda: sum(_calls(r, job_id).values()) == 36, 20, what="the lost calls made")
    time.sleep(1)  # and nothing else
    assert _calls(r, job_id) == {**calls, "q1": 2, "q2": 2}
    assert r.zcard(keys.handling) == 0 and r.scard(keys.handled) == 32
