"""Job state in Redis: jobs, chunks, result records and counters, changed only through scripts."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from batchline import logs
from batchline import scripts as lua
from batchline.durability import Durability, server_since
from batchline.errors import JobNotFound
from batchline.keys import ChunkKeys, FleetKeys, JobKeys
from batchline.options import TABLE_OPTIONS as TABLE_OPTIONS  # re-exported
from batchline.options import JobOptions as JobOptions  # re-exported
from batchline.scripts import Scripts
from batchline.settings import Settings
from batchline.wire import ErrorInfo, unpack_obj


class ChunkState(StrEnum):
    """A chunk's `state` field, as stored in Redis and shown in status."""

    PENDING = "pending"
    CREATING = "creating"
    IN_PROGRESS = "in_progress"
    ENDED = "ended"
    # The batch answered 404 after it was seen, stayed in progress past its expiry, or its
    # results could not be read; an operator decides (`batchline unblock`).
    BLOCKED = "blocked"
    DONE = "done"
    FAILED = "failed"
    CANCELED = "canceled"
    # Refused as too large at create, its requests moved into two smaller chunks.
    SPLIT = "split"


class JobState(StrEnum):
    """A job's `state` field, as stored in Redis and shown in status."""

    INGESTING = "ingesting"
    PENDING = "pending"
    RUNNING = "running"
    CANCELING = "canceling"
    COMPLETED = "completed"
    CANCELED = "canceled"


OPEN_CHUNK_STATES = (
    ChunkState.PENDING,
    ChunkState.CREATING,
    ChunkState.IN_PROGRESS,
    ChunkState.ENDED,
    ChunkState.BLOCKED,
)
CLOSED_CHUNK_STATES = (ChunkState.DONE, ChunkState.FAILED, ChunkState.CANCELED, ChunkState.SPLIT)
FINAL_JOB_STATES = (JobState.COMPLETED, JobState.CANCELED)

# Job hash fields that hold integers.
JOB_COUNTERS = (
    "total",
    "accepted",
    "rejected",
    "succeeded",
    "failed",
    "canceled",
    "retried",
    "cache_hits",
    "deduplicated",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cost_nusd",
    "open_chunks",
    "chunk_seq",
    "duplicates_canceled",
    "canceled_after_create",
)
CHUNK_INTS = (
    "attempt",
    "count",
    "bytes",
    "processed",
    "poll_gen",
    "poll_step",
    "results_seen",
    "fanout_runs",
)
CHUNK_FLOATS = (
    "made_at",
    "touched_at",
    "intent_at",
    "created_at",
    "ended_at",
    "polled_at",
    "expires_at",
)


def _decode(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


@dataclass
class Chunk:
    """One chunk's metadata, decoded."""

    job_id: str
    number: int
    state: str
    fields: dict[str, str]

    def number_field(self, name: str, default: int = 0) -> int:
        v = self.fields.get(name)
        return int(v) if v not in (None, "") else default

    def time_field(self, name: str, default: float = 0.0) -> float:
        v = self.fields.get(name)
        return float(v) if v not in (None, "") else default

    @property
    def batch_id(self) -> str | None:
        return self.fields.get("batch_id") or None

    @property
    def count(self) -> int:
        return self.number_field("count")

    @property
    def attempt(self) -> int:
        return self.number_field("attempt", 1)

    @property
    def ref(self) -> str:
        return f"{self.job_id}:{self.number}"


NO_USAGE = (0, 0, 0, 0, 0)


def make_record(
    custom_id: str,
    state: str,
    attempts: int,
    line: int | None,
    message: dict[str, Any] | None = None,
    error: ErrorInfo | None = None,
    cached: bool = False,
) -> dict[str, Any]:
    """A result record (see wire.ResultRecord)."""
    rec: dict[str, Any] = {"custom_id": custom_id, "state": state, "attempts": attempts}
    if message is not None:
        rec["message"] = message
    if error is not None:
        rec["error"] = dict(error)
    if line is not None:
        rec["line"] = line
    if cached:
        rec["cached"] = True
    return rec


@dataclass(frozen=True, slots=True)
class Item:
    """One request's outcome for the FINISH script."""

    api_id: str
    kind: str  # succeeded | failed | canceled | retry
    blob: bytes  # the packed record, or the last error (JSON) for a retry
    hook: bool = False
    usage: tuple[int, int, int, int, int] = NO_USAGE
    # For the fleet's counters: a failed request's error type, a succeeded one's model (its
    # name in the price table, which its cost is counted under).
    detail: str = ""


@dataclass(frozen=True)
class Finished:
    """What FINISH reports: the chunk's progress, the job's remaining requests, fresh ids."""

    processed: int
    count: int
    remaining: int
    fresh: frozenset[str]


class Store:
    """All reads and writes of Batchline's state in Redis."""

    def __init__(self, r: redis.Redis, settings: Settings):
        self.r = r
        self.settings = settings
        self.scripts = Scripts(r)
        self.fleet = FleetKeys(settings.key_prefix)
        self.durability = Durability(r, settings.durable_writes, settings.durable_timeout_s)
        self._options: dict[str, JobOptions] = {}

    @staticmethod
    def now() -> float:
        return time.time()

    def keys(self, job_id: str) -> JobKeys:
        return JobKeys(self.settings.key_prefix, job_id)

    def chunk_keys(self, job_id: str, number: int) -> ChunkKeys:
        return self.keys(job_id).chunk(number)

    # --- jobs ---

    def job_fields(self, job_id: str) -> dict[str, str]:
        raw = self.r.hgetall(self.keys(job_id).job)
        if not raw:
            raise JobNotFound(f"no job {job_id!r}")
        return _decode(raw)

    def job_state(self, job_id: str) -> str | None:
        st = self.r.hget(self.keys(job_id).job, "state")
        return st.decode() if st else None

    def options(self, job_id: str) -> JobOptions:
        """The job's options, cached per process (they never change after submit)."""
        opts = self._options.get(job_id)
        if opts is None:
            raw = self.r.hget(self.keys(job_id).job, "options")
            if raw is None:
                raise JobNotFound(f"no job {job_id!r}")
            opts = JobOptions.from_json(raw)
            if len(self._options) > 1000:
                self._options.clear()
            self._options[job_id] = opts
        return opts

    def cancel_requested(self, job_id: str) -> bool:
        return self.r.hget(self.keys(job_id).job, "cancel_requested") == b"1"

    def chunk_numbers(self, job_id: str) -> list[int]:
        return [int(n) for n in self.r.lrange(self.keys(job_id).chunks, 0, -1)]

    # --- chunks ---

    def chunk(self, job_id: str, number: int) -> Chunk | None:
        raw = self.r.hgetall(self.chunk_keys(job_id, number).meta)
        if not raw:
            return None
        fields = _decode(raw)
        return Chunk(job_id, number, fields.get("state", ""), fields)

    def chunks(self, job_id: str) -> list[Chunk]:
        numbers = self.chunk_numbers(job_id)
        pipe = self.r.pipeline(transaction=False)
        for n in numbers:
            pipe.hgetall(self.chunk_keys(job_id, n).meta)
        out = []
        for n, raw in zip(numbers, pipe.execute(), strict=True):
            if raw:
                fields = _decode(raw)
                out.append(Chunk(job_id, n, fields.get("state", ""), fields))
        return out

    def transition(
        self,
        job_id: str,
        number: int,
        from_states: tuple[str, ...] | str,
        to_state: str,
        *,
        close: bool = False,
        **fields: Any,
    ) -> bool:
        """Move a chunk from one of from_states to to_state; False if it was elsewhere."""
        if isinstance(from_states, str):
            from_states = (from_states,)
        flat: list[Any] = []
        for k, v in fields.items():
            flat += [k, v]
        if "touched_at" not in fields:
            flat += ["touched_at", self.now()]
        res = lua.TRANSITION(
            self.r,
            lua.TransitionKeys(self.chunk_keys(job_id, number).meta, self.keys(job_id).job),
            lua.TransitionArgs(",".join(from_states), to_state, "1" if close else "0"),
            flat,
        )
        return bool(res == 1)

    def job_transition(self, job_id: str, from_state: str, to_state: str) -> bool:
        """Move the job from from_state to to_state; False if it was in another state."""
        job = self.keys(job_id).job
        res = lua.TRANSITION(
            self.r, lua.TransitionKeys(job, job), lua.TransitionArgs(from_state, to_state, "0")
        )
        return bool(res == 1)

    # --- creates ---

    def tag_ttl_s(self) -> int:
        """How long a chunk's tag names it: past any batch of its job, plus the retention."""
        return self.settings.retention_s + 7 * 86400

    def register_tags(self, pipe: Any, tags: dict[str, str]) -> None:
        """Queue on `pipe` the tag -> chunk names that let any worker tell whose a batch is."""
        for tag, ref in tags.items():
            pipe.set(self.fleet.tag(tag), ref, ex=self.tag_ttl_s())

    def redis_now(self) -> float:
        """Redis's clock: one clock for every worker, whatever their hosts' clocks say."""
        sec, usec = self.r.time()
        return float(sec) + usec / 1e6

    def begin_create(self, job_id: str, number: int) -> tuple[float | None, bool]:
        """Record a create's intent (pending -> creating, call live): its time (None when the
        chunk was not pending) and whether the write is durable (settings.durable_writes)."""
        res, durable = self.durability.run(
            lua.BEGIN_CREATE, lua.ChunkKey(self.chunk_keys(job_id, number).meta), lua.NoArgs()
        )
        return (float(res) if res else None), durable

    def server_since(self) -> float:
        """When the Redis server answering now was first seen (see durability.server_since)."""
        return server_since(self.r, self.settings.key_prefix)

    def look_first(self, job_id: str, number: int, since: float, until: float) -> bool:
        """A pending chunk whose move to `creating` Redis may have lost: treat it as a create
        whose outcome is unknown, made between `since` and `until`."""
        res = lua.LOOK_FIRST(
            self.r,
            lua.ChunkKey(self.chunk_keys(job_id, number).meta),
            lua.LookFirstArgs(since, until),
        )
        return bool(res == 1)

    def create_unknown(self, job_id: str, number: int, why: str) -> float | None:
        """The chunk's create call ended without an answer that settles it."""
        res = lua.CREATE_UNKNOWN(
            self.r, lua.ChunkKey(self.chunk_keys(job_id, number).meta), lua.CreateUnknownArgs(why)
        )
        return float(res) if res else None

    def create_refused(self, job_id: str, number: int) -> bool:
        """No batch was made for the chunk: back to pending."""
        ck = self.chunk_keys(job_id, number)
        res = lua.CREATE_REFUSED(self.r, lua.CreateRefusedKeys(ck.meta, ck.suspects), lua.NoArgs())
        return bool(res == 1)

    def adopt(self, job_id: str, number: int, batch_id: str, **fields: Any) -> str:
        """Give the chunk a batch shown to be its own (see scripts.ADOPT for the verdicts)."""
        keys = self.keys(job_id)
        ck = keys.chunk(number)
        now = self.now()
        flat: list[Any] = []
        for k, v in {
            "poll_gen": 1,
            "poll_step": 0,
            "polled_at": now,
            "touched_at": now,
            **fields,
        }.items():
            flat += [k, v]
        res, durable = self.durability.run(
            lua.ADOPT,
            lua.AdoptKeys(
                meta=ck.meta,
                claim=self.fleet.claimed(batch_id),
                job=keys.job,
                duplicates=keys.duplicates,
                suspects=ck.suspects,
            ),
            lua.AdoptArgs(batch_id, f"{job_id}:{number}", self.settings.retention_s + 86400),
            flat,
        )
        if not durable:
            # Recoverable: lost, the chunk is `creating` again and finds this batch by its tag.
            logs.warning("redis.not_durable", write="claim", job_id=job_id, chunk=number)
        return res.decode() if isinstance(res, bytes) else str(res)

    def split_chunk(self, chunk: Chunk, parts: list[tuple[list[str], int, str]]) -> list[int]:
        """Replace a chunk in `creating` by new pending chunks (ids, body bytes, tag); their
        numbers, or [] when the chunk was no longer creating. The new chunks are written
        first and join the job's chunk list in one step with the old chunk's close."""
        keys = self.keys(chunk.job_id)
        first = int(self.r.hincrby(keys.job, "chunk_seq", len(parts))) - len(parts)
        numbers = list(range(first, first + len(parts)))
        now = self.redis_now()
        pipe = self.r.pipeline(transaction=False)
        self.register_tags(
            pipe,
            {tag: f"{chunk.job_id}:{n}" for n, (_, _, tag) in zip(numbers, parts, strict=True)},
        )
        for n, (ids, body, tag) in zip(numbers, parts, strict=True):
            ck = keys.chunk(n)
            pipe.delete(ck.ids)
            for start in range(0, len(ids), 1000):
                pipe.rpush(ck.ids, *ids[start : start + 1000])
            pipe.hset(
                ck.meta,
                mapping={
                    "state": ChunkState.PENDING,
                    "attempt": chunk.attempt,
                    "count": len(ids),
                    "bytes": body,
                    "processed": 0,
                    "made_at": now,
                    "touched_at": now,
                    "kind": "split",
                    "tag": tag,
                },
            )
        pipe.execute()
        done = lua.SPLIT(
            self.r,
            lua.SplitKeys(meta=keys.chunk(chunk.number).meta, chunks=keys.chunks, job=keys.job),
            lua.NowArg(now),
            numbers,
        )
        if done != 1:
            self.r.delete(*(k for n in numbers for k in keys.chunk(n).all()))
            return []
        return numbers

    def touch_chunk(self, job_id: str, number: int, **fields: Any) -> None:
        self.r.hset(
            self.chunk_keys(job_id, number).meta, mapping={"touched_at": self.now(), **fields}
        )

    def chunk_ids(self, job_id: str, number: int, start: int = 0, end: int = -1) -> list[str]:
        ids = self.r.lrange(self.chunk_keys(job_id, number).ids, start, end)
        return [i.decode() for i in ids]

    # --- records ---

    def finish(self, job_id: str, number: int | str, items: Sequence[Item]) -> Finished:
        """Record outcomes atomically; an id already recorded for this chunk is skipped."""
        keys = self.keys(job_id)
        ck = keys.chunk(number)
        values: list[Any] = []
        for it in items:
            values += [it.api_id, it.kind, it.blob, "1" if it.hook else "0", *it.usage, it.detail]
        res = lua.FINISH(
            self.r,
            lua.FinishKeys(
                job=keys.job,
                meta=ck.meta,
                done=ck.done,
                raw=ck.raw,
                records=keys.records,
                retry=ck.retry,
                hooks_pending=keys.hooks_pending,
                last_errors=keys.last_errors,
                requests=keys.requests,
                stats=self.fleet.stats,
            ),
            lua.FinishArgs(len(items), self.now()),
            values,
        )
        fresh = frozenset(x.decode() if isinstance(x, bytes) else str(x) for x in res[3:])
        return Finished(int(res[0]), int(res[1]), int(res[2]), fresh)

    def original_ids(self, job_id: str, api_ids: list[str]) -> dict[str, str]:
        if not api_ids:
            return {}
        vals = self.r.hmget(self.keys(job_id).original_ids, api_ids)
        return {a: v.decode() for a, v in zip(api_ids, vals, strict=True) if v}

    def record(self, job_id: str, api_id: str) -> dict[str, Any] | None:
        raw = self.r.hget(self.keys(job_id).records, api_id)
        return unpack_obj(raw) if raw else None

    def iter_records(self, job_id: str, ordered: bool = False) -> Iterator[dict[str, Any]]:
        """Every terminal record of the job; in input-line order when ordered."""
        records = self.keys(job_id).records
        if not ordered:
            for _, raw in self.r.hscan_iter(records, count=1000):
                yield unpack_obj(raw)
            return
        # Order by line: remember only (line, field) in a first pass, then read in order.
        index = sorted(
            (unpack_obj(raw).get("line", 0), name)
            for name, raw in self.r.hscan_iter(records, count=1000)
        )
        for start in range(0, len(index), 1000):
            names = [name for _, name in index[start : start + 1000]]
            for raw in self.r.hmget(records, names):
                if raw is not None:
                    yield unpack_obj(raw)

    # --- retention ---

    def expire_job(self, job_id: str, seconds: int) -> None:
        """Let every key of the job expire `seconds` from now."""
        keys = self.keys(job_id)
        pipe = self.r.pipeline(transaction=False)
        for key in keys.static_keys():
            pipe.expire(key, seconds)
        for n in self.chunk_numbers(job_id):
            for key in keys.chunk(n).all():
                pipe.expire(key, seconds)
        pipe.execute()

    def delete_job(
        self, job_id: str, chunk_count: int | None = None, keep_claim: bool = False
    ) -> None:
        """Remove every key of the job, including chunks an interrupted ingest began; with
        keep_claim, its record stays as claimed (ingesting, its fingerprint), so the job
        never disappears while a redelivered submit ingests it again."""
        keys = self.keys(job_id)
        listed = set(self.chunk_numbers(job_id))
        begun = self.r.hmget(keys.job, "ingest_chunks", "chunk_seq")
        highest = max([chunk_count or 0, *(int(v) for v in begun if v)])
        numbers = sorted(listed | set(range(highest)))
        doomed = [k for k in keys.static_keys() if not (keep_claim and k == keys.job)]
        for n in numbers:
            doomed += keys.chunk(n).all()
        for start in range(0, len(doomed), 500):
            self.r.delete(*doomed[start : start + 500])
        if keep_claim:
            names = ("state", "fingerprint", "created_at")
            claim = dict(zip(names, self.r.hmget(keys.job, *names), strict=True))
            pipe = self.r.pipeline(transaction=True)  # never seen half reset
            pipe.delete(keys.job)
            pipe.hset(keys.job, mapping={k: v for k, v in claim.items() if v})
            pipe.execute()
            return
        self.r.zrem(self.fleet.jobs, job_id)
        self.r.srem(self.fleet.active_jobs, job_id)
