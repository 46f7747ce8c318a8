"""`batchline.submit_job`: the entry point other services call by name."""

from __future__ import annotations

from typing import Any

from batchline.messaging.names import TaskName
from batchline.pipeline.submit import submit
from batchline.settings import get_settings
from batchline.store import JobOptions
from tasks.base import PipelineTask
from workers.app import app


@app.task(name=TaskName.SUBMIT_JOB.value, base=PipelineTask, bind=True, ignore_result=False)
def submit_job(
    self: PipelineTask,
    requests: list[Any] | None = None,
    source: str | None = None,
    upload: str | None = None,
    job_id: str | None = None,
    defaults: dict[str, Any] | None = None,
    on_result: str | None = None,
    on_complete: str | None = None,
    hook_queue: str | None = None,
    max_attempts: int | None = None,
    metadata: Any = None,
    accept_invalid: bool = False,
    webhook_url: str | None = None,
    result_events: bool = False,
    max_cost_usd: float | None = None,
    cache: bool = False,
    cache_scope: str = "global",
    format: str | None = None,
    template: str | None = None,
    system_template: str | None = None,
    id_column: str | None = None,
) -> dict[str, Any]:
    """Validate, store and start a job; returns {job_id, accepted, rejected, existing}.

    `format` (jsonl, csv, tsv, parquet; default: the source's extension, else jsonl) says how
    to read `source` or `upload`; `template` and `system_template` build each row's prompt
    from its columns, `id_column` names the column that becomes the custom_id."""
    from batchline.formats import detect_format
    from batchline.validation import RowSpec, check_defaults
    from batchline.webhooks.endpoints import check_job_webhook

    settings = get_settings()
    if format is not None:
        detect_format(None, format)  # refused now when unknown
    RowSpec.build(template, system_template, id_column)  # refused now when unusable
    if webhook_url is not None:
        check_job_webhook(webhook_url, settings)
    base_defaults: dict[str, Any] = {}
    if settings.default_model:
        base_defaults["model"] = settings.default_model
    if settings.default_max_tokens:
        base_defaults["max_tokens"] = settings.default_max_tokens
    options = JobOptions(
        defaults={**base_defaults, **check_defaults(defaults)},
        on_result=on_result,
        on_complete=on_complete,
        hook_queue=hook_queue,
        max_attempts=max_attempts if max_attempts is not None else settings.max_attempts,
        metadata=metadata,
        accept_invalid=accept_invalid,
        webhook_url=webhook_url,
        result_events=result_events,
        max_cost_usd=max_cost_usd,
        cache=cache,
        cache_scope=cache_scope,
        format=format,
        template=template,
        system_template=system_template,
        id_column=id_column,
    )
    return dict(
        self.step(
            submit, job_id=job_id, options=options, requests=requests, source=source, upload=upload
        )
    )
