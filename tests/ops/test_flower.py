"""Flower against a live run: authentication, workers online, every stage's tasks, no secrets."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchline.devstack import RedisServer, wait_for
from batchline.errors import JobRefused
from tests.ops.support import Flower, get, stop_all
from tests.support.jobs import DEFAULTS, check_records, prompts
from tests.support.procs import API_KEY

PASSWORD = "flower-redis-pass-51c"
STAGES = {
    "batchline.submit_job",
    "batchline.create_batch",
    "batchline.poll_batch",
    "batchline.fan_out_results",
    "batchline.process_result",
    "batchline.plan_retries",
    "batchline.finalize_job",
}
MARK = "confidential-prompt-text"


def test_flower_shows_workers_and_every_stage_without_prompts_or_keys(
    stack_factory: Any, tmp_path: Path
) -> None:
    # Given a stack on a password-protected Redis, two workers, and Flower with basic auth
    server = RedisServer(tmp_path / "redis-pw", password=PASSWORD).start()
    # (with task events for the per-custom_id result tasks, which are off by default)
    st = stack_factory(
        "--processing-seconds", "2", redis=server, max_batch_requests=20, result_task_events=True
    )
    flower: Flower | None = None
    try:
        started = [
            st.worker(wait=False, name="api", hostname="flowerhost", queues=["api"]),
            st.worker(
                wait=False,
                name="main",
                hostname="flowerhost",
                queues=["ingest", "results", "events"],
            ),
        ]
        flower = Flower(tmp_path, st.env, "ops", "flower-pw").start()
        for w in started:
            wait_for(w.ready, 60, interval=0.1, what=w.name)

        # Then the API refuses a request without credentials, or with wrong ones
        for path in ("/api/workers", "/api/tasks", "/"):
            assert get(flower.base_url + path)[0] == 401, path
        wrong = base64.b64encode(b"ops:guess").decode()
        assert get(flower.base_url + "/api/workers", {"Authorization": f"Basic {wrong}"})[0] == 401

        # And both workers show up online
        wait_for(
            lambda: (
                flower.api("/api/workers?status=true")
                == {"api@flowerhost": True, "main@flowerhost": True}
            ),
            20,
            interval=0.3,
            what="workers online in flower",
        )

        # When a job runs, some requests needing a retry batch
        reqs = prompts(36, directive=f" {MARK}") + prompts(
            4, "once", f" {MARK} [[emulate:errored-once:overloaded_error]]"
        )
        sub = st.client.submit(reqs, defaults=DEFAULTS)
        final = st.client.wait(sub["job_id"], timeout_s=60)
        assert final["state"] == "completed"
        assert check_records(reqs, list(st.client.results(sub["job_id"]))) == {"succeeded": 40}

        # And a submit whose input is refused
        with pytest.raises(JobRefused, match="line 2"):
            st.client.submit([reqs[0], {"custom_id": "no-prompt"}], defaults=DEFAULTS)

        # Then Flower has seen every stage's tasks succeed, and the refusal as REFUSED
        def seen() -> dict[str, Any]:
            tasks = flower.api("/api/tasks?limit=5000")
            names = {t["name"] for t in tasks.values() if t["state"] == "SUCCESS"}
            refused = any(t["state"] == "REFUSED" for t in tasks.values())
            return tasks if names >= STAGES and refused else {}

        tasks = wait_for(seen, 20, interval=0.5, what="every stage in flower")
        workers_raw = get(flower.base_url + "/api/workers?refresh=1", flower.auth)[1]
        tasks_raw = get(flower.base_url + "/api/tasks?limit=5000", flower.auth)[1]
    finally:
        stop_all([*st.workers, *([flower] if flower else [])])
        server.stop()

    job_id = sub["job_id"]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for t in tasks.values():
        by_name.setdefault(t["name"], []).append(t)
    # Task arguments are ids an operator can use: job, chunk, batch, custom_id
    assert job_id in by_name["batchline.finalize_job"][0]["args"]
    batch_ids = {b["batch_id"] for b in final["batches"]}
    polls = by_name["batchline.poll_batch"]
    assert any(any(b in p["args"] for b in batch_ids) for p in polls)
    results = by_name["batchline.process_result"]
    assert len(results) >= 40
    cids = {r["custom_id"] for r in reqs}
    assert all(job_id in r["args"] and any(f"'{c}'" in r["args"] for c in cids) for r in results)
    # The submit carries an upload id, never the requests, and names only the options given
    submit = next(t for t in by_name["batchline.submit_job"] if t["state"] == "SUCCESS")
    assert "upload" in submit["kwargs"] and "question" not in submit["kwargs"]
    assert "'options': ['defaults']" in submit["kwargs"], submit["kwargs"]
    # A refused submit is REFUSED with its reason, told apart from a fault (FAILURE)
    refused = [t for t in by_name["batchline.submit_job"] if t["state"] == "REFUSED"]
    assert len(refused) == 1 and "line 2" in refused[0]["exception"]
    assert not [t for t in tasks.values() if t["state"] == "FAILURE"]
    # A poll that waited (countdown retries) and then succeeded carries no traceback
    waited = [p for p in polls if p["state"] == "SUCCESS" and p["retries"]]
    assert waited, polls
    assert all(not p.get("traceback") for p in waited)
    # The webhook scheduler's ticks stay out of the task list
    assert "batchline.schedule_webhooks" not in by_name
    # And nothing Flower holds or serves has a prompt, the API key or the Redis password
    for blob in (tasks_raw, workers_raw, orjson.dumps(tasks)):
        for secret in (MARK, "question q1", API_KEY, PASSWORD):
            assert secret.encode() not in blob, secret
    for t in tasks.values():
        assert t["worker"] in ("api@flowerhost", "main@flowerhost")
