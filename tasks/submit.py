"""`batchline.submit_job`: the entry point other services call by name."""

from __future__ import annotations

from typing import Any

from batchline.messaging.names import TaskName
from batchline.options import JobOptions, with_options
from batchline.pipeline.submit import submit
from tasks.base import PipelineTask
from workers.app import app


@app.task(name=TaskName.SUBMIT_JOB.value, base=PipelineTask, bind=True, ignore_result=False)
@with_options
def submit_job(
    self: PipelineTask,
    requests: list[Any] | None = None,
    source: str | None = None,
    upload: str | None = None,
    job_id: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Validate, store and start a job; returns {job_id, accepted, rejected, existing}.

    The options are JobOptions' fields (batchline.options). `format` (jsonl, csv, tsv,
    parquet; default: the source's extension, else jsonl) says how to read `source` or
    `upload`; `template` and `system_template` build each row's prompt from its columns,
    `id_column` names the column that becomes the custom_id."""
    given = JobOptions.given("submit_job", options)
    return dict(
        self.step(
            submit, job_id=job_id, options=given, requests=requests, source=source, upload=upload
        )
    )
