"""In-process result handlers: a Python callable run on the results worker for each result.

A job names one with its `handler` option, or the fleet with BATCHLINE_RESULT_HANDLER: a
dotted path, `package.module:function` (or `package.module.function`), called as
`handler(job_id, custom_id, record)` with the terminal record the client's results() yields,
once per request. It runs in the results worker's process, in a thread pool of
BATCHLINE_HANDLER_THREADS shared by everything that process records, so a group of results
with a handler that waits on I/O (an HTTP call, a database write) takes about as long as its
slowest call, not the sum of them.

Effectively once, like the on_result hooks: each call is claimed in Redis before it is made
(the job's `handling` set, stamped with the time) and marked done after it returns (the
`handled` set), so a redelivered result whose call finished is not called again. A call
whose worker died is claimed again once BATCHLINE_HANDLER_TIMEOUT_S has passed. A handler
that raises is called again, at most BATCHLINE_HANDLER_ATTEMPTS times in all; then its
error is kept (`handler_errors`, and the job's `handler_failed` count) and the request counts
as handled. A failing call never holds up the other results or the job.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from celery.utils.imports import import_from_cwd

from batchline import logs
from batchline import scripts as lua
from batchline.errors import JobRefused
from batchline.pipeline.context import Context
from batchline.store import Store
from batchline.wire import dumps, loads, unpack_obj

Handler = Callable[[str, str, dict[str, Any]], Any]
CALLED_FOR = ("succeeded", "failed", "canceled")  # as the on_result hooks (not `rejected`)
RETRY_PAUSE_S = 0.2  # before a handler's second call; doubles for each one after

_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] | None = None  # (pid, threads): a forked child makes its own
_pool_lock = threading.Lock()
_resolved: dict[str, Handler] = {}


class HandlerImportError(Exception):
    """A handler path that does not name an importable callable."""


def split_path(path: str) -> tuple[str, str]:
    """`package.module:function` or `package.module.function` -> (module, attribute)."""
    module, sep, attr = path.strip().partition(":")
    if not sep:
        module, _, attr = module.rpartition(".")
    if not module or not attr or not all(p.isidentifier() for p in [*module.split("."), attr]):
        raise HandlerImportError(
            f"handler {path!r} is not a dotted path like package.module:function"
        )
    return module, attr


def resolve(path: str) -> Handler:
    """The callable `path` names, imported once per process."""
    fn = _resolved.get(path)
    if fn is not None:
        return fn
    module_name, attr = split_path(path)
    try:
        # As Celery imports `-A app`: the worker's working directory comes first.
        module = import_from_cwd(module_name)
    except Exception as exc:
        raise HandlerImportError(f"cannot import handler {path!r}: {exc!r}") from exc
    fn = getattr(module, attr, None)
    if fn is None:
        raise HandlerImportError(f"cannot import handler {path!r}: {module_name} has no {attr}")
    if not callable(fn):
        raise HandlerImportError(f"handler {path!r} is not callable")
    _resolved[path] = fn
    return fn


def check_handler(path: str) -> None:
    """Refuse (JobRefused) a handler path this process can tell is wrong: malformed, or
    naming a module or attribute that is not there in a package this process has. A path
    whose top package this process does not have is accepted (the results workers may have
    it); if they do not, each result records the import error."""
    try:
        top = split_path(path)[0].split(".")[0]
        resolve(path)
    except HandlerImportError as exc:
        cause = exc.__cause__
        if isinstance(cause, ModuleNotFoundError) and cause.name == top:
            return  # not this process's to judge
        raise JobRefused(str(exc)) from None


def handler_for(ctx: Context, job_id: str) -> str | None:
    """The job's handler path, or the fleet's, or None."""
    return ctx.store.options(job_id).handler or ctx.settings.result_handler


def _executor(threads: int) -> ThreadPoolExecutor:
    global _pool, _pool_key
    key = (os.getpid(), threads)
    with _pool_lock:
        if _pool is None or _pool_key != key:
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="handler")
            _pool_key = key
        return _pool


def _call(fn: Handler, attempts: int, job_id: str, record: dict[str, Any]) -> str:
    """Call the handler, again after a pause while it raises; '' or the last error."""
    error = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(RETRY_PAUSE_S * 2 ** (attempt - 1))
        try:
            fn(job_id, record["custom_id"], dict(record))
            return ""
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:2000]
    return error


def run_handlers(ctx: Context, job_id: str, items: list[tuple[str, dict[str, Any]]]) -> None:
    """Run the job's handler for newly recorded results, (custom_id, record) with the
    record's own custom_id, all at once in this process's thread pool; returns when every
    call claimed here has ended. Results another worker is calling, or whose call is done,
    are skipped. No handler for the job: nothing happens (and nothing is read)."""
    items = [(cid, rec) for cid, rec in items if rec.get("state") in CALLED_FOR]
    if not items:
        return
    path = handler_for(ctx, job_id)
    if path is None:
        return
    settings = ctx.settings
    store = ctx.store
    keys = store.keys(job_id)
    now = store.now()
    claimed = {
        c.decode() if isinstance(c, bytes) else c
        for c in lua.CLAIM_HANDLERS(
            store.r,
            lua.HandlerSets(keys.handled, keys.handling),
            lua.ClaimHandlerArgs(now, now - settings.handler_timeout_s),
            [cid for cid, _ in items],
        )
    }
    if not claimed:
        return
    mine = [(cid, rec) for cid, rec in items if cid in claimed]
    try:
        fn = resolve(path)
    except HandlerImportError as exc:
        _done(ctx, job_id, [(cid, rec, str(exc)) for cid, rec in mine])
        return
    pool = _executor(settings.handler_threads)
    running: dict[Future[str], tuple[str, dict[str, Any]]] = {
        pool.submit(_call, fn, settings.handler_attempts, job_id, rec): (cid, rec)
        for cid, rec in mine
    }
    # Each call is marked done as soon as it ends (with those that ended with it), so a
    # worker that dies mid-group repeats only the calls that had not ended.
    while running:
        ended, _ = wait(running, return_when=FIRST_COMPLETED)
        _done(ctx, job_id, [(*running.pop(f), f.result()) for f in ended])


def _done(ctx: Context, job_id: str, ended: Iterable[tuple[str, dict[str, Any], str]]) -> None:
    store = ctx.store
    keys = store.keys(job_id)
    pairs: list[str | bytes] = []
    for cid, rec, error in ended:
        pairs += [cid, dumps({"error": error}) if error else ""]
        if error:
            logs.warning(
                "handler.failed", job_id=job_id, custom_id=rec["custom_id"], error=error[:300]
            )
    lua.HANDLERS_DONE(
        store.r,
        lua.HandlersDoneKeys(keys.handled, keys.handling, keys.handler_errors, keys.job),
        lua.NoArgs(),
        pairs,
    )


def redelivered(ctx: Context, job_id: str, api_ids: Sequence[str]) -> list[str]:
    """Results found recorded already (redelivered messages, by api custom_id): make the
    handler calls never done (their worker died after recording). Returns the api custom_ids
    whose call another worker claimed and has not ended: the caller tries them again later
    (the claim may be a dead worker's, taken over after BATCHLINE_HANDLER_TIMEOUT_S)."""
    if not api_ids or handler_for(ctx, job_id) is None:
        return []
    store = ctx.store
    keys = store.keys(job_id)
    blobs = store.r.hmget(keys.records, list(api_ids))
    found = [(a, unpack_obj(b)) for a, b in zip(api_ids, blobs, strict=True) if b]
    found = [(a, rec) for a, rec in found if rec.get("state") in CALLED_FOR]
    items = [(rec["custom_id"], rec) for _, rec in found]
    if not items:
        return []
    run_handlers(ctx, job_id, items)
    pipe = store.r.pipeline(transaction=False)
    for cid, _ in items:
        pipe.sismember(keys.handled, cid)
    done = pipe.execute()
    return [a for (a, _), d in zip(found, done, strict=True) if not d]


def handler_errors(store: Store, job_id: str) -> dict[str, str]:
    """custom_id -> the error of each request whose handler gave up."""
    return {
        cid.decode(): loads(raw)["error"]
        for cid, raw in store.r.hscan_iter(store.keys(job_id).handler_errors, count=1000)
    }
