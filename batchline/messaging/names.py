"""Every Batchline task's name: the public contract other services send messages by."""

from __future__ import annotations

from enum import StrEnum

TASK_PREFIX = "batchline."  # every Batchline task's name starts so


class TaskName(StrEnum):
    """A task's name. Names are stable: queued messages and other services carry them."""

    # ingest: intake, job-level work and the periodic passes
    SUBMIT_JOB = "batchline.submit_job"
    GET_JOB = "batchline.get_job"
    CANCEL_JOB = "batchline.cancel_job"
    PLAN_RETRIES = "batchline.plan_retries"
    FINALIZE_JOB = "batchline.finalize_job"
    SWEEP = "batchline.sweep"
    RECOVER = "batchline.recover"
    # api: calls to the batch endpoints
    CREATE_BATCH = "batchline.create_batch"
    POLL_BATCH = "batchline.poll_batch"
    CANCEL_BATCH = "batchline.cancel_batch"
    UNBLOCK_CHUNK = "batchline.unblock_chunk"
    # results: the download's fan-out and one subtask per custom_id
    FAN_OUT_RESULTS = "batchline.fan_out_results"
    PROCESS_RESULT = "batchline.process_result"
    # events: the event stream and webhook deliveries
    DISPATCH_EVENT = "batchline.dispatch_event"
    DELIVER_WEBHOOK = "batchline.deliver_webhook"
    SCHEDULE_WEBHOOKS = "batchline.schedule_webhooks"
