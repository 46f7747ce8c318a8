"""`batchline.create_batch`: one Anthropic batch per chunk, at most once."""

from __future__ import annotations

from batchline.messaging.names import TaskName
from batchline.pipeline import create
from tasks.base import PipelineTask
from workers.app import app


@app.task(name=TaskName.CREATE_BATCH.value, base=PipelineTask, bind=True)
def create_batch(self: PipelineTask, job_id: str, chunk: int) -> None:
    self.step(create.create_batch, job_id, chunk)
