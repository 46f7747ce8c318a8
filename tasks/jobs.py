"""Job-level tasks: status, cancel, completion."""

from __future__ import annotations

from typing import Any

from batchline.messaging.names import TaskName
from batchline.pipeline import jobs
from batchline.pipeline.status import status
from tasks.base import PipelineTask
from workers.app import app
from workers.runtime import context


@app.task(name=TaskName.GET_JOB.value, base=PipelineTask, bind=True, ignore_result=False)
def get_job(self: PipelineTask, job_id: str) -> dict[str, Any]:
    """The job's status: state, counts, batches, usage and cost."""
    return status(context().store, job_id)


@app.task(name=TaskName.CANCEL_JOB.value, base=PipelineTask, bind=True, ignore_result=False)
def cancel_job(self: PipelineTask, job_id: str) -> dict[str, Any]:
    """Cancel the job; returns its status."""
    return dict(self.step(jobs.cancel_job, job_id))


@app.task(name=TaskName.FINALIZE_JOB.value, base=PipelineTask, bind=True)
def finalize_job(self: PipelineTask, job_id: str) -> None:
    self.step(jobs.finalize_job, job_id)
