"""`batchline doctor`'s checks of what jobs wait for: a dead worker's work being handed over,
and batches blocked until an operator decides."""

from __future__ import annotations

import time
from typing import Any

import redis

from batchline import liveness
from batchline.keys import FleetKeys
from batchline.ops.doctor import FAIL, OK, REDIS_TIMEOUT_S, WARN, Check, one_line
from batchline.redisconn import connect
from batchline.settings import Settings

# --- recovery: workers that stopped heartbeating, and what waits on them ---


def recovery_check(settings: Settings) -> Check:
    """Which workers heartbeat, whether the recovery pass runs, and what jobs wait for."""
    r = connect(settings.state, settings, socket_timeout=REDIS_TIMEOUT_S)
    broker = r
    if settings.broker != settings.state:
        broker = connect(settings.broker, settings, socket_timeout=REDIS_TIMEOUT_S)
    now = time.time()
    keys = liveness.LivenessKeys(settings.key_prefix)
    reports, _ = liveness.read_reports(r, keys, held=False)
    beating = [rep for rep in reports if rep.alive]
    on_time = [rep for rep in beating if rep.silent_for(now) <= 2 * settings.worker_heartbeat_s]
    last = r.get(liveness.RecoveryKeys(settings.key_prefix).last_run)
    pending = liveness.waits(r, settings, broker=broker, now=now)
    ran = (
        f"the recovery pass ran {now - float(last):.0f}s ago"
        if last
        else "the recovery pass never ran"
    )
    detail = f"{len(on_time)} worker(s) heartbeating; {ran}"
    hint_beat = "beat schedules it (`celery -A workers beat`); restart beat after an upgrade"
    late = 3 * settings.recovery_interval_s + 5
    # (a fleet that just started has not had its first pass yet)
    since = float(last) if last else min((rep.started_at for rep in beating), default=now)
    if beating and now - since > late:
        return Check("recovery", FAIL, f"{detail}: a dead worker's tasks would wait", hint_beat)
    if pending:
        shown = "; ".join(_wait_line(w) for w in pending[:5])
        more = f"; and {len(pending) - 5} more" if len(pending) > 5 else ""
        return Check(
            "recovery",
            WARN,
            f"{detail}; waiting on recovery: {shown}{more}",
            "nothing to do: the recovery pass hands the work over by the time shown; a worker "
            "that is only slow (its host overloaded) takes longer",
        )
    return Check("recovery", OK, f"{detail}; no job waits on a worker")


def _wait_line(w: liveness.Wait) -> str:
    job = f"job {w.job_id}" + (f" chunk(s) {','.join(map(str, w.chunks))}" if w.chunks else "")
    return f"{job + ': ' if w.job_id else ''}{w.what}"


# --- blocked batches: an operator decides ---

BLOCKED_REASONS = ("not_found", "overdue", "results_unreadable")
BLOCKED_MEANING = {
    "not_found": "the API answers 404 for it",
    "overdue": "still in progress long past its expiry",
    "results_unreadable": "its results could not be read",
}


def blocked_chunks(r: redis.Redis, settings: Settings) -> list[dict[str, Any]]:
    """Every blocked chunk of the active jobs: job, chunk, batch id, reason, since, error."""
    from batchline.keys import JobKeys

    jobs = sorted(j.decode() for j in r.smembers(FleetKeys(settings.key_prefix).active_jobs))
    pipe = r.pipeline(transaction=False)
    for job_id in jobs:
        pipe.lrange(JobKeys(settings.key_prefix, job_id).chunks, 0, -1)
    refs = [(job_id, int(n)) for job_id, ns in zip(jobs, pipe.execute(), strict=True) for n in ns]
    fields = ("state", "batch_id", "blocked_reason", "blocked_at", "blocked_error")
    pipe = r.pipeline(transaction=False)
    for job_id, n in refs:
        pipe.hmget(JobKeys(settings.key_prefix, job_id).chunk(n).meta, *fields)
    out = []
    for (job_id, n), values in zip(refs, pipe.execute(), strict=True):
        f = dict(zip(fields, (v.decode() if v else "" for v in values), strict=True))
        if f["state"] == "blocked":
            out.append(
                {
                    "job_id": job_id,
                    "chunk": n,
                    "batch_id": f["batch_id"] or None,
                    "reason": f["blocked_reason"] or "unknown",
                    "since": float(f["blocked_at"] or 0) or None,
                    "error": f["blocked_error"] or None,
                }
            )
    return out


def blocked_checks(settings: Settings) -> list[Check]:
    """One line per blocked chunk, with the command that unblocks it."""
    r = connect(settings.state, settings, socket_timeout=REDIS_TIMEOUT_S)
    found = blocked_chunks(r, settings)
    if not found:
        return [Check("blocked", OK, "no batch waits for an operator")]
    checks = []
    for b in found:
        since = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(b["since"])) if b["since"] else "?"
        why = BLOCKED_MEANING.get(b["reason"], b["reason"])
        error = f" ({one_line(b['error'])[:200]})" if b["error"] else ""
        command = f"batchline unblock {b['job_id']} --chunk {b['chunk']}"
        hint = f"`{command}` to try it again"
        if b["reason"] in ("not_found", "overdue"):
            hint += f", or `{command} --resend` to send its requests again in a new batch"
        checks.append(
            Check(
                "blocked",
                WARN,
                f"job {b['job_id']} chunk {b['chunk']} (batch {b['batch_id'] or 'none'}): "
                f"{b['reason']}, {why}, since {since}{error}",
                hint,
            )
        )
    return checks
