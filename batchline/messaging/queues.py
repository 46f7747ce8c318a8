"""Queue names, one per pipeline stage, and which task goes where."""

from __future__ import annotations

from enum import StrEnum

from batchline.messaging.names import TaskName


class Queue(StrEnum):
    """A stage's queue; operators scale each pool on its own with `-Q`."""

    INGEST = "ingest"  # submit, plan retries, finalize, cancel, sweep, recover
    API = "api"  # every call to a batch endpoint except the results download
    RESULTS = "results"  # results download, fan-out and one subtask per custom_id
    EVENTS = "events"  # event stream and webhook deliveries


# Task name -> queue. Names are stable: moving a module must not break queued messages.
ROUTES: dict[TaskName, Queue] = {
    TaskName.SUBMIT_JOB: Queue.INGEST,
    TaskName.GET_JOB: Queue.INGEST,
    TaskName.CANCEL_JOB: Queue.INGEST,
    TaskName.PLAN_RETRIES: Queue.INGEST,
    TaskName.FINALIZE_JOB: Queue.INGEST,
    TaskName.SWEEP: Queue.INGEST,
    TaskName.RECOVER: Queue.INGEST,
    TaskName.CREATE_BATCH: Queue.API,
    TaskName.POLL_BATCH: Queue.API,
    TaskName.CANCEL_BATCH: Queue.API,
    TaskName.UNBLOCK_CHUNK: Queue.API,
    TaskName.FAN_OUT_RESULTS: Queue.RESULTS,
    TaskName.PROCESS_RESULT: Queue.RESULTS,
    TaskName.DELIVER_WEBHOOK: Queue.EVENTS,
    TaskName.DISPATCH_EVENT: Queue.EVENTS,
    TaskName.SCHEDULE_WEBHOOKS: Queue.EVENTS,
}
