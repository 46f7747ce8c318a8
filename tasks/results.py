"""`batchline.fan_out_results` and one `batchline.process_result` per custom_id."""

from __future__ import annotations

from batchline.messaging.names import TaskName
from batchline.pipeline import results
from batchline.settings import get_settings
from tasks.base import PipelineTask
from workers.app import app


@app.task(name=TaskName.FAN_OUT_RESULTS.value, base=PipelineTask, bind=True)
def fan_out_results(self: PipelineTask, job_id: str, chunk: int, batch_id: str) -> None:
    self.step(results.fan_out_results, job_id, chunk, batch_id)


# One per custom_id: worker events (task-received, task-succeeded) for these would triple the
# messages per request, so they are off unless BATCHLINE_RESULT_TASK_EVENTS asks for them;
# Flower sees the results stage through fan_out_results either way.
@app.task(
    name=TaskName.PROCESS_RESULT.value,
    base=PipelineTask,
    bind=True,
    send_events=get_settings().result_task_events,
)
def process_result(
    self: PipelineTask, job_id: str, chunk: int, batch_id: str, custom_id: str
) -> None:
    self.step(results.process_result, job_id, chunk, batch_id, custom_id)
