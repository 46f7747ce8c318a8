"""The Python client: submit a job, follow it, read its results, cancel it."""

from __future__ import annotations

import contextlib
import hashlib
import io
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

import orjson
import redis
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout

from batchline import memory
from batchline.errors import BatchlineError, JobConflict, JobNotFound, JobRefused
from batchline.formats import MAGIC_BYTES, Prefixed, compression_of, detect_format, read_exactly
from batchline.keys import upload_key
from batchline.messaging.names import TaskName
from batchline.options import ADDED_LATER, JobOptions, with_options
from batchline.pipeline.status import status as job_status
from batchline.redisconn import connect
from batchline.settings import Settings, get_settings
from batchline.sources import (
    READ_BYTES,
    iter_blocks,
    resolve_source,
    upload_segments,
)
from batchline.store import FINAL_JOB_STATES, Store
from batchline.tables import ResultTable
from batchline.wire import dumps

F = TypeVar("F", bound=Callable[..., Any])
UPLOAD_TTL_S = 86400
# Segments (about 4 MB of input each) sent to Redis at a time while uploading.
UPLOAD_FLUSH_SEGMENTS = 8

# What each option of `batchline.submit_job` is when it is not given (batchline.options): an
# option given with this value names the same job as one left out. Every option that
# defines the job is here; timeouts and how the answer is shown are not options.
JOB_OPTION_DEFAULTS: dict[str, Any] = JobOptions.given_defaults()
# Changing how ids are derived must not make a retried submit look like a new job to a
# client of another version, so the scheme is named in every hash.
JOB_ID_SCHEME = b"batchline-job-id/1"
# Marks the digest of a source file this process cannot read: the id then comes from its path.
PATH_DIGEST = "path:"


def _takes_options(fn: F) -> F:
    """A submit's signature names every job option (batchline.options) and job_id."""
    return with_options(fn, extras=("job_id",))


def _shown(ref: dict[str, str], options: dict[str, Any]) -> str:
    """What Flower shows of a submit: ids and option names, never defaults or metadata."""
    shown = {**ref, "job_id": options.get("job_id")}
    given = sorted(k for k, v in options.items() if k != "job_id" and v is not None)
    return repr({**shown, "options": given})


class NoWorker(BatchlineError):
    """Raised when no worker answered a request in time; job_id names a submit's job."""

    def __init__(self, message: str, job_id: str | None = None):
        super().__init__(message)
        self.job_id = job_id


def derive_job_id(content_sha256: str, options: Mapping[str, Any]) -> str:
    """The job id of a submit that names none: the same content and options, the same id.

    A retried submit (after a timeout, say) then finds the job the first one queued instead
    of making and paying for a second. The hash covers the options that define the job;
    one given as its default counts as left out, and dict keys are sorted.
    """
    chosen = {k: v for k, v in options.items() if k != "job_id" and v is not None}
    # Options added later are hashed only when set, so every id derived before stays.
    base = {k: v for k, v in JOB_OPTION_DEFAULTS.items() if k not in ADDED_LATER}
    canonical = orjson.dumps({**base, **chosen}, option=orjson.OPT_SORT_KEYS)
    sha = hashlib.sha256(JOB_ID_SCHEME)
    for part in (content_sha256.encode(), canonical):
        sha.update(b"\n" + part)
    return f"job_{sha.hexdigest()[:32]}"


def new_job_id() -> str:
    """A random job id, of the form the workers give (for a submit that asks for a new job)."""
    return f"job_{uuid.uuid4().hex[:20]}"


def _file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(READ_BYTES):
            sha.update(block)
    return sha.hexdigest()


def _check_id_options(fresh: bool, options: Mapping[str, Any]) -> None:
    if fresh and options.get("job_id"):
        raise JobRefused("give a job_id or ask for a new job (fresh, --new), not both")


def _still_queued(job_id: str, timeout_s: float, repeatable: bool) -> str:
    """What a submit nobody answered means: the job may still come, and how to handle it."""
    again = (
        "running the same submit again will not create a second job"
        if repeatable
        else f"to try again without a second job, submit with --job-id {job_id}"
    )
    return (
        f"no worker answered batchline.submit_job within {timeout_s:g}s, so job {job_id} "
        "may still be queued: it will run when a worker comes up (is one running on the "
        f"ingest queue? `batchline doctor`). `batchline status {job_id}` shows it once a "
        f"worker has taken it, and `batchline cancel {job_id}` then cancels it; {again}"
    )


def _derived_conflict(digest: str) -> str:
    """Why a derived job id can meet different content, and what to do about it."""
    if digest.startswith(PATH_DIGEST):
        why = "its id comes from the path (this process cannot read the file) and the file changed"
    else:
        why = (
            "its id comes from the content and options, so either the workers' own defaults "
            "(BATCHLINE_DEFAULT_MODEL, BATCHLINE_DEFAULT_MAX_TOKENS, BATCHLINE_MAX_ATTEMPTS) "
            "changed since or the options' keys came in another order"
        )
    return f"{why}: submit with --new (fresh=True) for a new job"


class Client:
    """Talks to Batchline through Redis (state) and Celery messages (work)."""

    def __init__(self, settings: Settings | None = None, app: Celery | None = None):
        from batchline.messaging.app import create_app

        self.settings = settings or get_settings()
        self.app = app or create_app(self.settings)
        self.r = connect(self.settings.state, self.settings)
        self.store = Store(self.r, self.settings)

    # --- submit ---

    def upload(self, lines: Iterable[bytes]) -> str:
        """Store JSONL lines in Redis (compressed) for a submit; returns the upload id."""
        return self._upload(lines)[0]

    def _upload(self, lines: Iterable[bytes], raw: bool = False) -> tuple[str, str]:
        """Upload JSONL lines (or, `raw`, a file's bytes in blocks); returns the upload id
        and the sha256 of the bytes uploaded."""
        upload_id = uuid.uuid4().hex
        key = upload_key(self.settings.key_prefix, upload_id)
        sha = hashlib.sha256()

        def hashed() -> Iterator[bytes]:
            for line in lines:
                if not raw and not line.endswith(b"\n"):
                    line += b"\n"
                sha.update(line)
                yield line

        pipe = self.r.pipeline(transaction=False)
        size = 0
        stored = 0  # bytes already in Redis
        pending = 0  # segments queued on the pipe
        hw = self.settings.redis_memory_high_water

        def flush() -> None:
            # Refused when the job would not fit in Redis (what is stored so far goes too).
            nonlocal stored, pending
            try:
                memory.check_room(self.r, hw, size - stored + memory.job_needs(size), "this job")
                pipe.expire(key, UPLOAD_TTL_S)
                pipe.execute()
            except redis.exceptions.OutOfMemoryError as exc:
                self.r.delete(key)
                raise memory.refusal(exc, "the upload") from None
            except JobRefused:
                self.r.delete(key)
                raise
            stored, pending = size, 0

        segments = (zlib.compress(b, 1) for b in hashed()) if raw else upload_segments(hashed())
        for segment in segments:
            pipe.rpush(key, segment)
            size += len(segment)
            pending += 1
            if pending >= UPLOAD_FLUSH_SEGMENTS:  # a large file never sits whole in memory
                flush()
        if size == 0:  # an empty input is still an upload (the job is refused as empty)
            pipe.rpush(key, zlib.compress(b""))
        flush()
        return upload_id, sha.hexdigest()

    @_takes_options
    def submit(
        self,
        source: str | Path | BinaryIO | Iterable[dict[str, Any]],
        *,
        timeout_s: float = 120,
        fresh: bool = False,
        **options: Any,
    ) -> dict[str, Any]:
        """Submit a file (a path, "-" for standard input, or a binary stream) or request (or
        row) dicts; returns {job_id, accepted, rejected}.

        A file is JSONL, CSV, TSV or Parquet (from its extension, or `format=`), plain or
        compressed with gzip or zstd. `template="Summarize: {text}"` (and `system_template`)
        builds each row's prompt from its columns; `id_column` names the column that becomes
        the custom_id (default: the row number). The workers read the file; the client only
        uploads its bytes. The requests travel through Redis, never inside the task
        message, so they do not show up in Flower.

        Idempotent: without a job_id the id is derived from the content and the options
        (derive_job_id), so the same submit again returns the existing job (`existing`
        true), even a completed one until its data expires (retention_s after it ends),
        instead of running and paying for it twice. fresh=True makes a new job with a random
        id; an explicit job_id wins. The same id with different content raises JobConflict.
        """
        _check_id_options(fresh, options)
        if isinstance(source, (str, Path)) or hasattr(source, "read"):
            upload_id, digest, options = self._upload_file(cast(Any, source), options)
        else:
            upload_id, digest = self._upload(dumps(obj) for obj in cast(Any, source))
        key = upload_key(self.settings.key_prefix, upload_id)
        # Once a worker has answered, nobody reads the upload again: a new job's ingest
        # removed it, an existing job or a refusal left it. Without an answer the queued
        # submit still needs it (and it expires with UPLOAD_TTL_S).
        return self._submit(
            {"upload": upload_id}, digest, fresh, timeout_s, options, lambda: self._drop(key)
        )

    def _upload_file(
        self, source: str | Path | BinaryIO, options: dict[str, Any]
    ) -> tuple[str, str, dict[str, Any]]:
        """Upload a file as it is; the options with its format (None for JSONL) set."""
        name = None if hasattr(source, "read") else str(source)
        fmt = detect_format(name, options.get("format"))
        options = {**options, "format": None if fmt == "jsonl" else fmt}
        if name is None:
            return (*self._upload_stream(source, fmt), options)  # type: ignore[arg-type]
        if name == "-":
            return (*self._upload_stream(sys.stdin.buffer, fmt), options)
        with open(name, "rb") as f:
            return (*self._upload_stream(f, fmt), options)

    def _upload_stream(self, stream: BinaryIO, fmt: str) -> tuple[str, str]:
        head = read_exactly(stream, MAGIC_BYTES)
        whole: Any = Prefixed(head, stream)
        if fmt == "jsonl" and compression_of(head) is None:
            # Line by line, as JSONL always was: the same file derives the same job id.
            return self._upload(io.BufferedReader(whole))
        return self._upload(iter_blocks(whole), raw=True)

    @_takes_options
    def submit_source(
        self, path: str, *, timeout_s: float = 120, fresh: bool = False, **options: Any
    ) -> dict[str, Any]:
        """Submit a JSONL file by a path the workers can read (under BATCHLINE_SOURCE_DIR).

        Idempotent like submit. The id is derived from the file's content when this process
        can read the file at that path too (under its own BATCHLINE_SOURCE_DIR), else from
        the path: the same path with new content is then refused (JobConflict) until
        fresh=True.
        """
        _check_id_options(fresh, options)
        try:
            digest = _file_sha256(resolve_source(path, self.settings.source_dir))
        except (JobRefused, OSError):
            digest = PATH_DIGEST + hashlib.sha256(path.encode()).hexdigest()
        return self._submit({"source": path}, digest, fresh, timeout_s, options)

    def _submit(
        self,
        ref: dict[str, str],
        digest: str,
        fresh: bool,
        timeout_s: float,
        options: dict[str, Any],
        answered: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        given = options.get("job_id")
        job_id = given or (new_job_id() if fresh else derive_job_id(digest, options))
        options = {**options, "job_id": job_id}
        try:
            return self._call(
                TaskName.SUBMIT_JOB,
                timeout_s,
                answered=answered,
                kwargs={**ref, **options},
                kwargsrepr=_shown(ref, options),
            )
        except NoWorker:
            repeatable = bool(given) or not fresh
            raise NoWorker(_still_queued(job_id, timeout_s, repeatable), job_id) from None
        except JobConflict as exc:
            if given or fresh:
                raise
            raise JobConflict(f"{exc}; {_derived_conflict(digest)}") from None

    def _drop(self, key: str) -> None:
        # Only tidying (the key expires anyway): never let it hide the submit's own answer.
        with contextlib.suppress(redis.exceptions.RedisError):
            self.r.delete(key)

    def _call(
        self,
        name: str,
        timeout_s: float,
        answered: Callable[[], None] | None = None,
        **send: Any,
    ) -> dict[str, Any]:
        result = self.app.send_task(name, **send)
        try:
            value = result.get(timeout=timeout_s, propagate=False)
            failed = result.failed()
        except CeleryTimeout:
            raise NoWorker(
                f"no worker answered {name} within {timeout_s:.0f}s; is a worker "
                "running on the ingest queue? (`batchline doctor`)"
            ) from None
        finally:
            result.forget()
        # Drop the result before raising: a traceback holding it would keep it (and its
        # backend subscription) alive well past this call.
        del result
        if answered is not None:
            answered()
        if failed:
            raise value
        return value

    # --- follow ---

    def status(self, job_id: str) -> dict[str, Any]:
        """The job's status (batchline.pipeline.status): the same as the `batchline.get_job`
        task answers, `retried_requests` and `failure_reasons` included."""
        return job_status(self.store, job_id)

    def jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        ids = [i.decode() for i in self.r.zrevrange(self.store.fleet.jobs, 0, limit - 1)]
        out = []
        for job_id in ids:
            try:
                out.append(job_status(self.store, job_id, with_batches=False))
            except JobNotFound:
                continue
        return out

    def wait(
        self,
        job_id: str,
        timeout_s: float | None = None,
        interval_s: float = 0.5,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Block until the job is completed or canceled; returns its final status.

        A Redis that cannot be reached for a while (a restart, a Sentinel failover) is
        waited through like a job still running: the wait ends only at its timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                st = self.status(job_id)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id}: Redis unreachable ({exc})") from exc
                time.sleep(interval_s)
                continue
            if on_progress:
                on_progress(st)
            if st["state"] in FINAL_JOB_STATES:
                return st
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {st['state']} after {timeout_s}s")
            time.sleep(interval_s)

    def results(self, job_id: str, ordered: bool = False) -> Iterator[dict[str, Any]]:
        """Every terminal record: one per custom_id (and one per rejected line)."""
        if self.store.job_state(job_id) is None:
            raise JobNotFound(f"no job {job_id!r}")
        return self.store.iter_records(job_id, ordered=ordered)

    def table(self, job_id: str) -> ResultTable:
        """The job's results as its input table: an iterable of rows (dicts), in input order,
        each the input row's columns plus state, answer, error_type, error_message,
        input_tokens, output_tokens and cost_usd (`.columns` names them in order). A job of
        JSONL requests gives its custom_ids with the same columns."""
        return ResultTable(self.store, job_id)

    def dataframe(self, job_id: str) -> Any:
        """The same table as a pandas DataFrame (pip install 'batchline[pandas]')."""
        from batchline.outputs import dataframe

        return dataframe(self.table(job_id))

    def write_table(self, job_id: str, path: str | Path, format: str | None = None) -> int:
        """Write the table to a CSV, TSV, Parquet or JSONL file (from `format` or the
        extension); returns the number of rows written."""
        from batchline.outputs import write_table_file

        return write_table_file(self.table(job_id), path, format)

    # --- control ---

    def cancel(self, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
        """Cancel a job the workers know; JobNotFound (nothing canceled) for any other id.

        A submit still queued for a worker is not a job yet: nothing stops it before a worker
        takes it (it then runs), so cancel it once `status` finds it.
        """
        if self.store.job_state(job_id) is None:
            raise JobNotFound(
                f"no job {job_id!r}, so nothing was canceled: the id is unknown, past its "
                "retention, or its submit is still queued for a worker (it becomes a job, "
                "which can then be canceled, once a worker takes it)"
            )
        return self._call(TaskName.CANCEL_JOB, timeout_s, args=(job_id,))
