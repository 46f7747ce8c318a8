"""Queue names, one per pipeline stage, and which task goes where."""

from __future__ import annotations

from enum import StrEnum


class Queue(StrEnum):
    """A stage's queue; operators scale each pool on its own with `-Q`."""

    INGEST = "ingest"  # submit, plan retries, finalize, cancel, sweep, recover
    API = "api"  # every call to a batch endpoint except the results download
    RESULTS = "results"  # results download, fan-out and one subtask per custom_id
    EVENTS = "events"  # event stream and webhook deliveries


# Task name -> queue. Names are stable: moving a module must not break queued messages.
ROUTES: dict[str, Queue] = {
    "batchline.submit_job": Queue.INGEST,
    "batchline.get_job": Queue.INGEST,
    "batchline.cancel_job": Queue.INGEST,
    "batchline.plan_retries": Queue.INGEST,
    "batchline.finalize_job": Queue.INGEST,
    "batchline.sweep": Queue.INGEST,
    "batchline.recover": Queue.INGEST,
    "batchline.create_batch": Queue.API,
    "batchline.poll_batch": Queue.API,
    "batchline.poll_all": Queue.API,
    "batchline.cancel_batch": Queue.API,
    "batchline.unblock_chunk": Queue.API,
    "batchline.fan_out_results": Queue.RESULTS,
    "batchline.process_result": Queue.RESULTS,
    "batchline.process_results": Queue.RESULTS,
    "batchline.deliver_webhook": Queue.EVENTS,
    "batchline.dispatch_event": Queue.EVENTS,
    "batchline.schedule_webhooks": Queue.EVENTS,
}
