"""The Python client: submit a job, follow it, read its results, cancel it."""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout

from batchline.errors import BatchlineError, JobNotFound
from batchline.pipeline.status import status as job_status
from batchline.settings import Settings, get_settings
from batchline.sources import upload_key, upload_segments
from batchline.store import FINAL_JOB_STATES, Store
from batchline.wire import dumps

UPLOAD_TTL_S = 86400


def _shown(ref: dict[str, str], options: dict[str, Any]) -> str:
    """What Flower shows of a submit: ids and option names, never defaults or metadata."""
    shown = {**ref, "job_id": options.get("job_id")}
    return repr({**shown, "options": sorted(k for k in options if k != "job_id")})


class NoWorker(BatchlineError):
    """Raised when no worker answered a request in time."""


class Client:
    """Talks to Batchline through Redis (state) and Celery messages (work)."""

    def __init__(self, settings: Settings | None = None, app: Celery | None = None):
        from workers.app import create_app

        self.settings = settings or get_settings()
        self.app = app or create_app(self.settings)
        self.r = redis.Redis.from_url(self.settings.state)
        self.store = Store(self.r, self.settings)

    # --- submit ---

    def upload(self, lines: Iterable[bytes]) -> str:
        """Store JSONL lines in Redis (compressed) for a submit; returns the upload id."""
        upload_id = uuid.uuid4().hex
        key = upload_key(self.settings.key_prefix, upload_id)
        pipe = self.r.pipeline(transaction=False)
        empty = True
        for segment in upload_segments(lines):
            pipe.rpush(key, segment)
            empty = False
        if empty:  # an empty input is still an upload (the job is then refused as empty)
            pipe.rpush(key, zlib.compress(b""))
        pipe.expire(key, UPLOAD_TTL_S)
        pipe.execute()
        return upload_id

    def submit(
        self,
        source: str | Path | Iterable[dict[str, Any]],
        *,
        timeout_s: float = 120,
        **options: Any,
    ) -> dict[str, Any]:
        """Submit a JSONL file (path) or request dicts; returns {job_id, accepted, rejected}.

        The requests travel through Redis, never inside the task message, so they do not
        show up in Flower.
        """
        if isinstance(source, (str, Path)):
            with open(source, "rb") as f:
                upload_id = self.upload(f)
        else:
            upload_id = self.upload(dumps(obj) for obj in source)
        return self._call(
            "batchline.submit_job",
            timeout_s,
            kwargs={"upload": upload_id, **options},
            kwargsrepr=_shown({"upload": upload_id}, options),
        )

    def submit_source(self, path: str, *, timeout_s: float = 120, **options: Any) -> dict[str, Any]:
        """Submit a JSONL file by a path the workers can read (under BATCHLINE_SOURCE_DIR)."""
        return self._call(
            "batchline.submit_job",
            timeout_s,
            kwargs={"source": path, **options},
            kwargsrepr=_shown({"source": path}, options),
        )

    def _call(self, name: str, timeout_s: float, **send: Any) -> dict[str, Any]:
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
        if failed:
            raise value
        return value

    # --- follow ---

    def status(self, job_id: str) -> dict[str, Any]:
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
        """Block until the job is completed or canceled; returns its final status."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            st = self.status(job_id)
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

    # --- control ---

    def cancel(self, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
        if self.store.job_state(job_id) is None:
            raise JobNotFound(f"no job {job_id!r}")
        return self._call("batchline.cancel_job", timeout_s, args=(job_id,))
