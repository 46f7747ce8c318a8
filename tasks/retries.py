"""`batchline.plan_retries`: retryable requests of a finished batch become retry batches."""

from __future__ import annotations

from batchline.messaging.names import TaskName
from batchline.pipeline import retries
from tasks.base import PipelineTask
from workers.app import app


@app.task(name=TaskName.PLAN_RETRIES.value, base=PipelineTask, bind=True)
def plan_retries(self: PipelineTask, job_id: str, chunk: int) -> None:
    self.step(retries.plan_retries, job_id, chunk)
