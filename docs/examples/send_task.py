"""Enqueue a job from another service by Celery task name, with that service's own app.

Nothing of Batchline is imported: any service that can publish a Celery message (JSON,
protocol 2) to the same Redis can do this. The answer comes back through the result backend.

    BATCHLINE_REDIS_URL=redis://:PASSWORD@redis:6379/0 python docs/examples/send_task.py
"""

import os
import time

from celery import Celery

REDIS_URL = os.environ.get("BATCHLINE_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("my-service", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])


def call(name: str, timeout_s: float = 60, **send: object) -> dict:
    """Send one of Batchline's tasks to its `ingest` queue and wait for the answer."""
    result = app.send_task(name, queue="ingest", **send)
    try:
        return result.get(timeout=timeout_s)  # a refused job raises its error, naming each line
    finally:
        result.forget()


def main() -> None:
    requests = [
        {"custom_id": "greet", "prompt": "Say hello in French."},
        {"custom_id": "count", "prompt": "Count from one to five."},
    ]
    job = call(
        "batchline.submit_job",
        kwargs={
            "requests": requests,
            "defaults": {"model": "claude-haiku-4-5", "max_tokens": 100},
            "metadata": {"team": "search"},
        },
        kwargsrepr="{'requests': '<2 requests>'}",  # keep the prompts out of Flower
    )
    print("job", job["job_id"], "accepted", job["accepted"], "existing", job["existing"])

    while True:
        status = call("batchline.get_job", args=(job["job_id"],))
        if status["state"] in ("completed", "canceled"):
            break
        time.sleep(1)
    print("state", status["state"], "counts", status["counts"], "cost_usd", status["cost_usd"])


if __name__ == "__main__":
    main()
