"""A results worker busy reading a long batch still looks alive to Flower and to `doctor`, and
Flower sees the result stage move with the default settings."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from batchline.devstack import wait_for
from tests.ops.support import Flower, stop_all
from tests.ops.test_doctor import doctor, lines
from tests.support.jobs import DEFAULTS, check_records, prompts

REQUESTS = 1600
LINES_PER_S = 160  # the batch's results take about 10 s to read


def test_a_results_worker_reading_a_long_batch_stays_online_and_its_groups_show_in_flower(
    stack_factory: Any, tmp_path: Path
) -> None:
    # Given the documented topology with default settings: a results worker with its flags,
    # a worker for the other stages, and Flower; results sent over a slow link
    # (a lease of 5 s, shorter than the 10 s stream, as the default 60 s is for a stream
    # slower than 17 lines a second)
    st = stack_factory(max_batch_requests=REQUESTS, lease_s=5)
    flower: Flower | None = None
    try:
        with st.starting():
            st.worker(name="main", hostname="busyhost", queues=["ingest", "api", "events"])
            results_worker = st.results_worker("results", hostname="busyhost")
        flower = Flower(tmp_path, st.env, "ops", "flower-pw").start()
        both = {"main@busyhost": True, "results@busyhost": True}
        wait_for(lambda: flower.api("/api/workers?status=true") == both, 30, what="online")
        st.emulator.configure(results_lines_per_s=LINES_PER_S)

        # When a job's one batch ends and its results are read for seconds
        log_start = Path(results_worker.log).stat().st_size
        reqs = prompts(REQUESTS)
        job_id = st.client.submit(reqs, defaults=DEFAULTS)["job_id"]

        def reading() -> bool:  # the batch ended at the API: its results are being read
            return any(b["status"] == "ended" for b in st.client.status(job_id)["batches"])

        wait_for(reading, 60, interval=0.2, what="results being read")
        # Then, all the while, Flower shows the results worker online, and doctor finds a
        # consumer for every queue
        seen: list[dict[str, bool]] = []
        checks: list[Any] = []
        # (doctor, twice, on a thread of its own: it takes seconds on a loaded machine)
        doctoring = threading.Thread(target=lambda: checks.extend(doctor(st.env) for _ in "12"))
        doctoring.start()
        deadline = time.monotonic() + 3 * REQUESTS / LINES_PER_S
        while st.client.status(job_id)["state"] != "completed" and time.monotonic() < deadline:
            seen.append(flower.api("/api/workers?status=true"))
            time.sleep(0.5)
        doctoring.join()
        assert len(seen) >= 6 and all(s == both for s in seen), seen
        assert len(checks) == 2
        for res in checks:
            found = lines(res.stdout)
            assert not found["queues"].startswith("FAIL"), res.stdout
            assert "results 1 worker(s)" in found["queues"], res.stdout

        final = st.client.wait(job_id, timeout_s=90)
        assert final["state"] == "completed"
        assert check_records(reqs, list(st.client.results(job_id))) == {"succeeded": REQUESTS}
        # (read once: the fan-out kept its lease through a stream longer than the lease)
        assert st.emulator.stats()["calls"]["results"] == 1
        # (and the results worker wrote at most one log line per 100 requests)
        with open(results_worker.log, "rb") as f:
            f.seek(log_start)
            logged = f.read().decode().splitlines()
        assert len(logged) <= REQUESTS / 100, "\n".join(logged)

        # And Flower lists the result stage, a task per group of results, each on the
        # results worker, covering every request
        def groups() -> list[dict[str, Any]]:
            tasks = flower.api("/api/tasks?limit=10000").values()
            found = [
                t
                for t in tasks
                if t["name"] == "batchline.process_result" and t["state"] == "SUCCESS"
            ]
            return found if sum(_count(t) for t in found) >= REQUESTS else []

        found = wait_for(groups, 30, interval=0.5, what="result groups in flower")
        assert {t["worker"] for t in found} == {"results@busyhost"}
        assert sum(_count(t) for t in found) == REQUESTS
        assert len(found) < REQUESTS / 8  # one per group, not one per result
        fan_outs = [
            t
            for t in flower.api("/api/tasks?limit=10000").values()
            if t["name"] == "batchline.fan_out_results"
        ]
        assert fan_outs and all(t["state"] == "SUCCESS" for t in fan_outs)
        assert {t["worker"] for t in fan_outs} == {"results@busyhost"}
        assert any(job_id in t["args"] for t in fan_outs)
    finally:
        stop_all([*st.workers, *([flower] if flower else [])])


def _count(task: dict[str, Any]) -> int:
    """The number of results a grouped process_result task recorded (from its kwargs)."""
    kwargs = task.get("kwargs") or ""
    marker = "'results': "
    if marker not in kwargs:
        return 0
    return int(kwargs.split(marker, 1)[1].split(",", 1)[0].split("}", 1)[0])
