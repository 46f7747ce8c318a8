"""Redis key names for jobs, chunks, the limiter and the sweeper, all under one prefix."""

from __future__ import annotations

from dataclasses import dataclass

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
    def stats(self) -> str:
        """Hash: fleet counters for metrics (API calls, 429s, results processed)."""
        return f"{self.prefix}:stats"

    @property
    def last_sweep(self) -> str:
        """String: when the sweeper last ran (doctor and metrics tell whether beat runs)."""
        return f"{self.prefix}:sweep:last_at"

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
