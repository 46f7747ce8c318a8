"""Redis key names for jobs, chunks, the limiter and the sweeper, all under one prefix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

# Requests that end without a batch of their own: answered from the cache, repeats answered
# with their leader's result, retries ended by a cancel. Each has a done-set like a chunk.
PSEUDO_CHUNKS = ("cache", "dups", "pool")


@dataclass(frozen=True)
class JobKeys:
    """Every key that holds one job's state."""

    prefix: str
    job_id: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:job:{self.job_id}"

    @property
    def job(self) -> str:
        """Hash: state, options, counters, usage and cost."""
        return self.base

    @property
    def requests(self) -> str:
        """Hash: api custom_id -> compressed request as sent ({"custom_id", "params"})."""
        return f"{self.base}:req"

    @property
    def original_ids(self) -> str:
        """Hash: api custom_id -> the user's custom_id, only where they differ."""
        return f"{self.base}:orig"

    @property
    def records(self) -> str:
        """Hash: api custom_id -> compressed terminal result record."""
        return f"{self.base}:res"

    @property
    def chunks(self) -> str:
        """List: chunk numbers in the order they were made."""
        return f"{self.base}:chunks"

    @property
    def retry_pool(self) -> str:
        """List: api custom_ids waiting to go into a retry chunk."""
        return f"{self.base}:pool"

    @property
    def retries(self) -> str:
        """Hash: api custom_id -> number of retries sent so far."""
        return f"{self.base}:att"

    @property
    def last_errors(self) -> str:
        """Hash: api custom_id -> last retryable error (JSON), for the final failure."""
        return f"{self.base}:lasterr"

    @property
    def hooks_pending(self) -> str:
        """Sorted set: hook marks (api custom_ids) recorded but not yet sent, by time."""
        return f"{self.base}:hooks"

    @property
    def hooks_sending(self) -> str:
        """Sorted set: hook marks claimed by a worker that is sending them, by claim time."""
        return f"{self.base}:hooks:sending"

    @property
    def handled(self) -> str:
        """Set: custom_ids whose in-process handler is done (returned, or gave up)."""
        return f"{self.base}:handled"

    @property
    def handling(self) -> str:
        """Sorted set: custom_ids whose handler a worker is calling, by claim time."""
        return f"{self.base}:handling"

    @property
    def handler_errors(self) -> str:
        """Hash: custom_id -> the handler's last error (JSON), when it gave up."""
        return f"{self.base}:handlererr"

    @property
    def followers(self) -> str:
        """Hash: leader's api custom_id -> "id,id,..." of repeats answered by its result."""
        return f"{self.base}:dups"

    @property
    def leaders(self) -> str:
        """Hash: params key -> api custom_id of the first request with those params."""
        return f"{self.base}:leaders"

    @property
    def duplicates(self) -> str:
        """Set: second batches made for one of the job's chunks (each canceled, counted once)."""
        return f"{self.base}:dupbatches"

    @property
    def rows(self) -> str:
        """List: the input rows of a table job, compressed in segments, in input order (what
        results tables are written from: see batchline.tables)."""
        return f"{self.base}:rows"

    @property
    def upload(self) -> str:
        """List: compressed JSONL segments uploaded by the client before submit."""
        return f"{self.base}:upload"

    def chunk(self, n: int | str) -> ChunkKeys:
        return ChunkKeys(f"{self.base}:c:{n}")

    def static_keys(self) -> list[str]:
        return [
            self.job,
            self.requests,
            self.original_ids,
            self.records,
            self.chunks,
            self.retry_pool,
            self.retries,
            self.last_errors,
            self.hooks_pending,
            self.hooks_sending,
            self.handled,
            self.handling,
            self.handler_errors,
            self.followers,
            self.leaders,
            self.duplicates,
            self.upload,
            self.rows,
            *(self.chunk(name).done for name in PSEUDO_CHUNKS),
        ]


@dataclass(frozen=True)
class ChunkKeys:
    """The keys of one chunk (one Anthropic batch once created)."""

    base: str

    @property
    def meta(self) -> str:
        """Hash: state, attempt, count, bytes, batch id, timestamps, progress."""
        return self.base

    @property
    def ids(self) -> str:
        """List: api custom_ids in this chunk, in order."""
        return f"{self.base}:ids"

    @property
    def raw(self) -> str:
        """Hash: api custom_id -> compressed result line, until processed."""
        return f"{self.base}:raw"

    @property
    def done(self) -> str:
        """Set: api custom_ids whose result from this batch has been processed."""
        return f"{self.base}:done"

    @property
    def retry(self) -> str:
        """List: api custom_ids of this batch to send again."""
        return f"{self.base}:retry"

    @property
    def suspects(self) -> str:
        """Set: batch ids that may be this chunk's (found in `list` after a create whose
        answer was lost), each waiting to be shown ours or not by its results."""
        return f"{self.base}:suspects"

    @property
    def foreign(self) -> str:
        """Set: batch ids whose results showed they are not this chunk's."""
        return f"{self.base}:foreign"

    def all(self) -> list[str]:
        return [self.meta, self.ids, self.raw, self.done, self.retry, self.suspects, self.foreign]


@dataclass(frozen=True)
class FleetKeys:
    """Keys shared by every job: indexes, the limiter, admission control."""

    prefix: str

    @property
    def jobs(self) -> str:
        """Sorted set: job id by creation time."""
        return f"{self.prefix}:jobs"

    @property
    def active_jobs(self) -> str:
        """Set: jobs not yet completed or canceled (what the sweeper walks)."""
        return f"{self.prefix}:jobs:active"

    @property
    def calls(self) -> str:
        """Sorted set: recent API calls (sliding one-minute window)."""
        return f"{self.prefix}:rl:calls"

    @property
    def pause(self) -> str:
        """String: fleet-wide pause after a 429, expires when the pause ends."""
        return f"{self.prefix}:rl:pause"

    @property
    def admission(self) -> str:
        """List: chunks waiting for room in the processing queue, in order."""
        return f"{self.prefix}:adm:queue"

    @property
    def in_flight(self) -> str:
        """Hash: chunk ref -> requests it holds in the processing queue."""
        return f"{self.prefix}:adm:held"

    @property
    def admission_sizes(self) -> str:
        """Hash: chunk ref -> its requests, for each chunk waiting for room."""
        return f"{self.prefix}:adm:sizes"

    @property
    def admission_parked(self) -> str:
        """Set: chunk refs whose create found no room; sent again when room is made."""
        return f"{self.prefix}:adm:parked"

    @property
    def stats(self) -> str:
        """Hash: fleet counters for metrics (API calls, 429s, results processed)."""
        return f"{self.prefix}:stats"

    @property
    def last_sweep(self) -> str:
        """String: when the sweeper last ran (doctor and metrics tell whether beat runs)."""
        return f"{self.prefix}:sweep:last_at"

    @property
    def poll_in_flight(self) -> str:
        """Sorted set: batch ids in flight -> created at (what `list` refreshes look for)."""
        return f"{self.prefix}:poll:inflight"

    @property
    def poll_snapshot(self) -> str:
        """Hash: batch id -> the batch as the last shared `list` snapshot saw it."""
        return f"{self.prefix}:poll:snap"

    @property
    def poll_snapshot_at(self) -> str:
        """String: when the shared `list` snapshot was last taken."""
        return f"{self.prefix}:poll:snap_at"

    def claimed(self, batch_id: str) -> str:
        """String: the chunk an Anthropic batch id is shown to belong to ("dup:" + the chunk
        for a second batch of one chunk, canceled)."""
        return f"{self.prefix}:claim:{batch_id}"

    def tag(self, tag: str) -> str:
        """String: the chunk ("job:n") whose requests carry this tag at the API."""
        return f"{self.prefix}:tag:{tag}"

    def not_ours(self, batch_id: str) -> str:
        """String: a batch whose results showed it is none of Batchline's (never read again)."""
        return f"{self.prefix}:notours:{batch_id}"

    def lease(self, name: str) -> str:
        return f"{self.prefix}:lease:{name}"

    def result_cache(self, scope: str, params_key: str) -> str:
        return f"{self.prefix}:cache:{scope}:{params_key}"


class ServerKeys(NamedTuple):
    """Which Redis server answered last (see batchline.durability.server_since)."""

    run_id: str  # String: the run id of the server last seen
    since: str  # String: when (Redis's clock) that server was first seen

    @classmethod
    def under(cls, prefix: str) -> ServerKeys:
        return cls(f"{prefix}:redis:run_id", f"{prefix}:redis:since")


@dataclass(frozen=True)
class EventKeys:
    """The streams and marks of the event log under one prefix."""

    prefix: str

    @property
    def fleet(self) -> str:
        """Stream: every event of every job (consumer groups read this one)."""
        return f"{self.prefix}:events"

    def job(self, job_id: str) -> str:
        """Stream: one job's events, expiring with the retention after its last event."""
        return f"{self.prefix}:job:{job_id}:events"

    def emitted(self, event_id: str) -> str:
        return f"{self.prefix}:evt:{event_id}"

    @property
    def dispatch_queued(self) -> str:
        """String: a webhook dispatch task is queued or running (at most one is sent)."""
        return f"{self.prefix}:wh:dispatch:queued"


@dataclass(frozen=True)
class LivenessKeys:
    """The keys of the worker registry, under Batchline's prefix."""

    prefix: str

    @property
    def registry(self) -> str:
        """Sorted set: worker id -> time of its last heartbeat."""
        return f"{self.prefix}:workers"

    def report(self, worker_id: str) -> str:
        """Hash: the worker's last report (node, queues, ack emulation, messages held...)."""
        return f"{self.prefix}:worker:{worker_id}"

    def alive(self, worker_id: str) -> str:
        """String: present while the worker heartbeats (expires worker_dead_after_s after the
        last one, by Redis's clock)."""
        return f"{self.prefix}:worker:{worker_id}:alive"


@dataclass(frozen=True)
class RecoveryKeys:
    """The recovery pass's own keys."""

    prefix: str

    @property
    def last_run(self) -> str:
        """String: when the recovery pass last ran."""
        return f"{self.prefix}:recovery:last_at"

    @property
    def lock(self) -> str:
        """String: held by the pass running now (one at a time across the fleet)."""
        return f"{self.prefix}:lease:recover"

    @property
    def watched(self) -> str:
        """Hash: job:chunk -> Watch (JSON), chunks whose results a dead worker may have held."""
        return f"{self.prefix}:recovery:watched"


def lane_ref(endpoint_id: str, job_id: str) -> str:
    """One endpoint's deliveries of one job: delivered strictly in order."""
    return f"{endpoint_id}|{job_id}"


def split_lane_ref(ref: str) -> tuple[str, str]:
    endpoint_id, job_id = ref.split("|", 1)
    return endpoint_id, job_id


def delivery_ref(endpoint_id: str, event_id: str) -> str:
    """How operators name a delivery (`webhooks replay ep_...:evt_...`)."""
    return f"{endpoint_id}:{event_id}"


def split_delivery_ref(ref: str) -> tuple[str, str]:
    endpoint_id, sep, event_id = ref.partition(":")
    if not sep or not endpoint_id or not event_id:
        raise ValueError(f"not a delivery id: {ref!r} (expected ENDPOINT:EVENT)")
    return endpoint_id, event_id


@dataclass(frozen=True)
class WebhookKeys:
    """Every key of webhook delivery state."""

    prefix: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:wh"

    @property
    def endpoints(self) -> str:
        """Hash: endpoint id -> JSON {url, kind}, every endpoint ever delivered to."""
        return f"{self.base}:endpoints"

    def delivery(self, endpoint_id: str, event_id: str) -> str:
        """Hash: one event for one endpoint: state, attempts, next try, body as sent."""
        return f"{self.base}:d:{endpoint_id}:{event_id}"

    def lane(self, ref: str) -> str:
        """List: event ids waiting for one endpoint and one job, the head being tried."""
        return f"{self.base}:lane:{ref}"

    @property
    def lane_prefix(self) -> str:
        return f"{self.base}:lane:"

    @property
    def due(self) -> str:
        """Sorted set: lane ref -> when its head is due (a retry, or a lease running out)."""
        return f"{self.base}:due"

    def log(self, endpoint_id: str) -> str:
        """List: the endpoint's delivery log, newest first (JSON per attempt)."""
        return f"{self.base}:log:{endpoint_id}"

    @property
    def dead(self) -> str:
        """Sorted set: delivery ref -> when it failed its last attempt."""
        return f"{self.base}:dead"

    @property
    def chain(self) -> str:
        """String: the id of the one live scheduler chain."""
        return f"{self.base}:chain"

    @property
    def dispatch_lock(self) -> str:
        """String: held by the one dispatcher reading the event stream."""
        return f"{self.base}:dispatch:lock"


def upload_key(prefix: str, upload_id: str) -> str:
    """Where the client leaves an upload for submit_job."""
    return f"{prefix}:upload:{upload_id}"


@dataclass(frozen=True)
class ConsumerKeys:
    """The keys of one consumer group of a service reading the event stream
    (batchline.consumer)."""

    prefix: str
    group: str

    def seen(self, event_id: str) -> str:
        """String: the group has handled this event (expires after the consumer's seen TTL)."""
        return f"{self.prefix}:consumer:{self.group}:seen:{event_id}"
