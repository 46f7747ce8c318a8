"""Lua scripts that make each state change in Redis atomic, so a redelivered task is a no-op.

Each script's text is `batchline/lua/<name>.lua`, shipped with the package. Here each one is
declared with its KEYS and its ARGV as two NamedTuples, whose fields name the keys and the
arguments in the order the script reads them; values the script takes in any number (field
and value pairs, chunk refs, ...) follow as `rest`. A call runs the script with EVALSHA,
loading it again when Redis does not know it (a restart), on a client or in a pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cached_property
from importlib import resources
from typing import Any, Generic, NamedTuple, TypeVar

import redis
from redis.commands.core import Script as RedisScript

# What a key or an argument may be: redis-py sends each as bytes.
Value = str | bytes | int | float

K = TypeVar("K", bound=tuple[Any, ...])
A = TypeVar("A", bound=tuple[Any, ...])


def lua_source(name: str) -> str:
    """The text of batchline/lua/<name>.lua."""
    return (resources.files("batchline") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def _present(values: Sequence[Any]) -> list[Any]:
    """The values without trailing Nones: an optional key or argument left out."""
    out = list(values)
    while out and out[-1] is None:
        out.pop()
    return out


class Script(Generic[K, A]):
    """One Lua script: its text (after its prelude's, when it shares helpers) and the names of
    its KEYS and ARGV in order."""

    def __init__(self, name: str, keys: type[K], args: type[A], *, prelude: str | None = None):
        self.name = name
        self.keys = keys
        self.args = args
        self.prelude = prelude

    @cached_property
    def source(self) -> str:
        text = lua_source(self.name)
        return lua_source(self.prelude) + text if self.prelude else text

    @cached_property
    def _script(self) -> RedisScript:
        # Every call names its client, so the script needs none of its own: its SHA is taken
        # from the text as bytes.
        return RedisScript(None, self.source.encode())

    def __call__(self, client: Any, keys: K, args: A, rest: Iterable[Value] = ()) -> Any:
        """Run the script on `client` (a Redis client, or a pipeline: then it is queued)."""
        return self._script(keys=_present(keys), args=[*_present(args), *rest], client=client)


class NoArgs(NamedTuple):
    pass


class ChunkKey(NamedTuple):
    meta: str  # the chunk's hash


class HookSets(NamedTuple):
    pending: str  # sorted set: hook marks recorded, not yet sent
    sending: str  # sorted set: hook marks claimed by a sender


class AdmissionKeys(NamedTuple):
    waiting: str  # list: chunk refs waiting for room, in order
    held: str  # hash: chunk ref -> requests it holds in the processing queue
    sizes: str  # hash: chunk ref -> its requests, for each chunk in line
    parked: str  # set: chunk refs whose create found no room (sent again when there is)


# Create a job record if the id is new; otherwise report the existing state and fingerprint.
class ClaimJobArgs(NamedTuple):
    fingerprint: str
    created_at: float


class JobKey(NamedTuple):
    job: str


CLAIM_JOB = Script("claim_job", JobKey, ClaimJobArgs)


# Compare-and-set a chunk's state (or a job's: both keys the job). `rest`: field/value pairs
# to set. Returns 1, or the current state when it did not match ('missing' for none).
class TransitionKeys(NamedTuple):
    meta: str
    job: str  # its open_chunks count drops when the new state closes the chunk


class TransitionArgs(NamedTuple):
    from_states: str  # the allowed current states, comma separated
    to_state: str
    closes: str  # '1' when the new state closes the chunk


TRANSITION = Script("transition", TransitionKeys, TransitionArgs)

# A create's intent: a pending chunk moves to `creating` with its call live, stamped with
# Redis's clock (the window a lost answer is looked for in is measured on one clock, whatever
# the clocks of the workers). Returns the time, or '' when not pending.
BEGIN_CREATE = Script("begin_create", ChunkKey, NoArgs)


# A create's outcome became unknown (or its worker stopped): the call ended now, by Redis's
# clock, unless an earlier run already said so.
# Returns the call's end time, or '' when the chunk is not creating.
class CreateUnknownArgs(NamedTuple):
    why: str


CREATE_UNKNOWN = Script("create_unknown", ChunkKey, CreateUnknownArgs)


# A pending chunk that existed when Redis came back older than the API (a restart from an
# older append-only file, a failover): its move to `creating` may be what was lost, so it is
# looked for as a create whose outcome is unknown. Returns 1, or 0 when not pending.
class LookFirstArgs(NamedTuple):
    since: float
    until: float


LOOK_FIRST = Script("look_first", ChunkKey, LookFirstArgs)


# No batch was made (a 429, or reconciliation found none): back to `pending`, to be created
# again. Returns 1, or 0 when the chunk was not creating.
class CreateRefusedKeys(NamedTuple):
    meta: str
    suspects: str


CREATE_REFUSED = Script("create_refused", CreateRefusedKeys, NoArgs)


# A batch shown to be a chunk's (its create answered, or its results carry the chunk's tag).
# `rest`: field/value pairs for the adopted chunk.
# Returns 'adopted', 'same' (already this chunk's batch), 'duplicate' (the chunk has another
# batch: this one is claimed as a duplicate and counted once), 'duplicate_known', or the
# owner's ref when another chunk has shown the batch to be its own.
class AdoptKeys(NamedTuple):
    meta: str
    claim: str  # the batch id's claim
    job: str
    duplicates: str  # the job's duplicates set
    suspects: str  # the chunk's suspects


class AdoptArgs(NamedTuple):
    batch_id: str
    chunk_ref: str
    claim_ttl_s: int


ADOPT = Script("adopt", AdoptKeys, AdoptArgs)


# A chunk refused as too large is closed as `split`; its halves (already written) join the
# job's chunks. `rest`: the new chunk numbers. Returns 1, or 0 when not creating.
class SplitKeys(NamedTuple):
    meta: str  # the old chunk's
    chunks: str  # the job's chunk list
    job: str


class NowArg(NamedTuple):
    now: float


SPLIT = Script("split", SplitKeys, NowArg)


# Record results, each at most once per chunk. `rest`: per item 10 values: api id, outcome
# (succeeded|failed|canceled|retry), record or error blob, hook flag, input, output,
# cache-write, cache-read tokens, cost (nUSD), detail (a failed request's error type, counted
# as `failed:<type>` in the job and the fleet stats; a succeeded one's price-table model, its
# cost counted as `cost_nusd:<model>` in the fleet stats).
# Returns {processed in chunk, chunk count, remaining in job, fresh items...}.
class FinishKeys(NamedTuple):
    job: str
    meta: str
    done: str  # the chunk's done set
    raw: str  # the chunk's raw results
    records: str
    retry: str  # the chunk's retry list
    hooks_pending: str
    last_errors: str
    requests: str
    stats: str  # fleet stats: the same counters summed over every job, for metrics


class FinishArgs(NamedTuple):
    n: int  # items in `rest`
    now: float


FINISH = Script("finish", FinishKeys, FinishArgs)


# Move an ended chunk's retryable requests to the job's pool and close the chunk.
# Returns {moved?, open chunks, pool length}.
class PlanKeys(NamedTuple):
    meta: str
    retry: str  # the chunk's retry list
    job: str
    pool: str


PLAN = Script("plan", PlanKeys, NowArg)


# Take the first n ids of the pool into a new retry chunk, if the pool still starts with
# them; a request sent again for the first time is counted once. Returns the attempt or 0.
class MakeRetryChunkKeys(NamedTuple):
    job: str
    pool: str
    chunks: str  # the job's chunk list
    retries: str  # the job's retries hash
    meta: str  # the new chunk's
    ids: str  # the new chunk's ids
    stats: str  # fleet stats: `requests:retried` (the job's `retried_requests` alike)


class MakeRetryChunkArgs(NamedTuple):
    n: int
    first_id: str
    last_id: str
    number: int
    body_bytes: int
    now: float
    tag: str


MAKE_RETRY_CHUNK = Script("make_retry_chunk", MakeRetryChunkKeys, MakeRetryChunkArgs)


# Mark a job completed (or canceled) once nothing remains. Returns the final state, '' when
# already final, or 'running' when requests remain. The job stays in the active set until
# its final event is written and its hooks are sent (RELEASE_JOB), so the sweep finishes
# either.
class FinalizeKeys(NamedTuple):
    job: str
    active_jobs: str  # unused, kept for the callers' key list
    hooks_pending: str
    stats: str
    hooks_sending: str


class FinalizeArgs(NamedTuple):
    now: float
    job_id: str
    complete_hook: str  # '1' when an on_complete hook must be sent


FINALIZE = Script("finalize", FinalizeKeys, FinalizeArgs)

# Ask for a job's cancel, atomically against FINALIZE: a job already completed stays
# completed; otherwise it is marked and becomes `canceled` when it finalizes.
# Returns the state the job was in ('missing' for none).
CANCEL_JOB = Script("cancel_job", JobKey, NoArgs)


# Let a finished job leave the active set once its final event is written and no hook
# waits. Returns 1 when it left.
class ReleaseJobKeys(NamedTuple):
    job: str
    active_jobs: str
    hooks_pending: str
    hooks_sending: str


class JobIdArg(NamedTuple):
    job_id: str


RELEASE_JOB = Script("release_job", ReleaseJobKeys, JobIdArg)


# Fleet-wide sliding one-minute window. Returns 0 when a token was taken, else ms to wait.
class AcquireKeys(NamedTuple):
    calls: str  # sorted set of recent calls
    pause: str


class AcquireArgs(NamedTuple):
    limit: int
    window_ms: int
    member: str  # unique


ACQUIRE = Script("acquire", AcquireKeys, AcquireArgs)


# Extend the fleet-wide pause to at least pause_ms.
class PauseKey(NamedTuple):
    pause: str


class PauseArgs(NamedTuple):
    pause_ms: int


PAUSE = Script("pause", PauseKey, PauseArgs)


# Admission control: a chunk may be created when it and every chunk ahead of it in line fit
# under the cap. Returns [1, woken...] when admitted (woken: parked chunks behind it that fit
# as well, to be sent now), [0] when not (the chunk is parked).
class AdmitArgs(NamedTuple):
    ref: str
    requests: int
    cap: int


ADMIT = Script("admit", AdmissionKeys, AdmitArgs, prelude="admission_lib")


# A chunk left the processing queue (or the line): the parked chunks that now fit, in order,
# are returned to be sent now.
class AdmitReleaseArgs(NamedTuple):
    ref: str
    cap: int


ADMIT_RELEASE = Script("admit_release", AdmissionKeys, AdmitReleaseArgs, prelude="admission_lib")

# Put chunks in line for admission, each once (a redelivered submit may enqueue again).
# `rest`: (chunk ref, requests) pairs in order.
ENQUEUE = Script("enqueue", AdmissionKeys, NoArgs)


# Store an ingest flush's requests, each once. `rest`: (api_id, blob, custom_id or "") triples
# ("" when the api id is the user's own). Returns 1 per request stored, 0 per repeat.
class StoreRequestsKeys(NamedTuple):
    requests: str  # hash: api custom_id -> stored request
    original_ids: str  # hash: api custom_id -> the user's custom_id, when they differ


STORE_REQUESTS = Script("store_requests", StoreRequestsKeys, NoArgs)

# Claim hook marks: a mark moves from pending to sending (stamped now) for exactly one
# caller. `rest`: the marks. Returns the claimed marks.
CLAIM_HOOKS = Script("claim_hooks", HookSets, NowArg)


# Hook marks older than the cutoff in either set lost their sender: move the sending ones
# back to pending and return all of them.
class CutoffArg(NamedTuple):
    cutoff: float


STALE_HOOKS = Script("stale_hooks", HookSets, CutoffArg)


# In-process handlers (batchline.handlers): a call is claimed by one caller (not done, and
# not claimed since the cutoff) and marked done once, with its error when it gave up.
class HandlerSets(NamedTuple):
    handled: str  # set: custom_ids whose handler is done
    handling: str  # sorted set: claimed calls (custom_ids), by claim time


class ClaimHandlerArgs(NamedTuple):
    now: float
    cutoff: float  # a claim older than this lost its worker


# `rest`: the custom_ids. Returns the claimed ones.
CLAIM_HANDLERS = Script("claim_handlers", HandlerSets, ClaimHandlerArgs)


class HandlersDoneKeys(NamedTuple):
    handled: str
    handling: str
    errors: str  # hash: custom_id -> error JSON
    job: str  # the job's hash: `handled` and `handler_failed` counters


# `rest`: (custom_id, error JSON or "") pairs; each counts once. Returns how many failed.
HANDLERS_DONE = Script("handlers_done", HandlersDoneKeys, NoArgs)


# Append to a hash field.
class HashKey(NamedTuple):
    hash: str


class AppendFieldArgs(NamedTuple):
    field: str
    text: str


APPEND_FIELD = Script("append_field", HashKey, AppendFieldArgs)

SCRIPTS: dict[str, Script[Any, Any]] = {
    s.name: s
    for s in (
        CLAIM_JOB,
        BEGIN_CREATE,
        CREATE_UNKNOWN,
        CREATE_REFUSED,
        LOOK_FIRST,
        ADOPT,
        SPLIT,
        TRANSITION,
        FINISH,
        PLAN,
        MAKE_RETRY_CHUNK,
        FINALIZE,
        CANCEL_JOB,
        RELEASE_JOB,
        ACQUIRE,
        PAUSE,
        ADMIT,
        ADMIT_RELEASE,
        ENQUEUE,
        STORE_REQUESTS,
        CLAIM_HOOKS,
        STALE_HOOKS,
        CLAIM_HANDLERS,
        HANDLERS_DONE,
        APPEND_FIELD,
    )
}


class Scripts:
    """The scripts above on one Redis client, by name, with KEYS and ARGV as plain lists:
    `scripts.finalize(keys=[...], args=[...])` (for a console or a test)."""

    def __init__(self, r: redis.Redis):
        self.r = r

    def __getattr__(self, name: str) -> Any:
        try:
            script = SCRIPTS[name]
        except KeyError:
            raise AttributeError(name) from None

        def call(keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None) -> Any:
            return script._script(
                keys=list(keys), args=list(args), client=self.r if client is None else client
            )

        return call
