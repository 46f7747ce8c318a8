"""`batchline.poll_batch` (countdown retries until the batch ends), `batchline.cancel_batch`
and `batchline.unblock_chunk`."""

from __future__ import annotations

from typing import Any

from batchline.messaging.names import TaskName
from batchline.pipeline import poll
from tasks.base import PipelineTask
from workers.app import app


@app.task(name=TaskName.POLL_BATCH.value, base=PipelineTask, bind=True)
def poll_batch(self: PipelineTask, job_id: str, chunk: int, batch_id: str, gen: int) -> None:
    self.step(poll.poll_batch, job_id, chunk, batch_id, gen)


@app.task(name=TaskName.CANCEL_BATCH.value, base=PipelineTask, bind=True)
def cancel_batch(self: PipelineTask, job_id: str, chunk: int, batch_id: str) -> None:
    self.step(poll.cancel_batch, job_id, chunk, batch_id)


@app.task(name=TaskName.UNBLOCK_CHUNK.value, base=PipelineTask, bind=True, ignore_result=False)
def unblock_chunk(
    self: PipelineTask, job_id: str, chunk: int, resend: bool = False
) -> dict[str, Any]:
    """Look again at a blocked chunk's batch (`batchline unblock`); with resend, give up a
    batch the API no longer shows and send its unanswered requests again."""
    return dict(self.step(poll.unblock, job_id, chunk, resend))
