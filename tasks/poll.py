"""`batchline.poll_batch` (countdown retries until the batch ends) and `batchline.cancel_batch`."""

from __future__ import annotations

from batchline.pipeline import poll
from tasks.base import PipelineTask
from workers.app import app


@app.task(name="batchline.poll_batch", base=PipelineTask, bind=True)
def poll_batch(self: PipelineTask, job_id: str, chunk: int, batch_id: str, gen: int) -> None:
    self.step(poll.poll_batch, job_id, chunk, batch_id, gen)


@app.task(name="batchline.cancel_batch", base=PipelineTask, bind=True)
def cancel_batch(self: PipelineTask, job_id: str, chunk: int, batch_id: str) -> None:
    self.step(poll.cancel_batch, job_id, chunk, batch_id)
