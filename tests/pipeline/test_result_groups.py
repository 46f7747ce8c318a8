"""process_result messages handled in groups: a result that fails inside a group neither
takes the group down nor is acknowledged unprocessed."""

from __future__ import annotations

from typing import Any

import orjson

from batchline.devstack import RESULTS_WORKER_ARGS, RESULTS_WORKER_ENV
from tests.support.jobs import DEFAULTS, check_records, prompts


def test_a_result_failing_inside_a_group_is_retried_and_the_rest_recorded(
    stack_factory: Any,
) -> None:
    # Given a results worker (grouped, as deployed) on which one result fails the first time
    st = stack_factory()
    with st.starting():
        st.worker(queues=["ingest", "api", "events"], name="main")
        st.worker(
            queues=["results"],
            name="results",
            concurrency=1,
            extra=RESULTS_WORKER_ARGS,
            env=RESULTS_WORKER_ENV,
            app="tests.support.faulty_results",
        )
    reqs = prompts(60) + prompts(1, "boom")
    # When a job's results are processed
    job_id = st.client.submit(reqs, defaults=DEFAULTS)["job_id"]
    final = st.client.wait(job_id, timeout_s=60)
    # Then every request succeeded once, the failing one on its retry
    assert final["state"] == "completed"
    assert check_records(reqs, list(st.client.results(job_id))) == {"succeeded": 61}
    calls = [orjson.loads(x) for x in st.redis.client().lrange("test:recorded", 0, -1)]
    recorded = [cid for call in calls for cid in call]
    assert len(recorded) == len(set(recorded)) == 61  # nothing recorded twice
    boom = [call for call in calls if any("boom" in cid for cid in call)]
    # The failing result was recorded on its own, after its group's others were recorded
    assert len(boom) == 1 and len(boom[0]) == 1
    assert calls.index(boom[0]) > 0 and max(len(c) for c in calls) > 1
    assert "results.failed" in st.workers[1].log_text()
