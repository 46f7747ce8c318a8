"""`batchline doctor`'s checks: settings, Redis, workers and their queues, the API or emulator."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from pydantic import ValidationError

from batchline.keys import FleetKeys
from batchline.redaction import redact_url
from batchline.redisconn import connect
from batchline.settings import Settings

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
REDIS_TIMEOUT_S = 3.0
API_TIMEOUT_S = 10.0
MEMORY_WARN_SHARE = 0.9
DEFAULT_API_URL = "https://api.anthropic.com"


@dataclass
class Check:
    """The outcome of one check: a status, what was found, and what to do about it."""

    name: str
    status: str
    detail: str
    hint: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run(load_settings: Callable[[], Settings], timeout_s: float = 1.5) -> list[Check]:
    """Every check, in order; later checks are skipped when what they need is broken."""
    try:
        settings = load_settings()
    except ValidationError as exc:
        return [
            Check(
                "settings",
                FAIL,
                settings_problem(exc),
                "fix the environment variable named above",
            )
        ]
    checks = [Check("settings", OK, f"state in {redact_url(settings.state)}")]
    state_ok = _redis_check(checks, "redis", settings.state, settings)
    broker_ok = state_ok
    if settings.broker != settings.state:
        broker_ok = _redis_check(checks, "broker", settings.broker, settings)
    if state_ok:
        checks.append(_beat_check(settings))
    if broker_ok:
        checks += _worker_checks(settings, timeout_s)
    else:
        checks.append(Check("workers", SKIP, "not checked: the broker is unreachable"))
    from batchline.ops import doctor_jobs  # its checks build on this module's

    if state_ok and broker_ok:
        checks.append(doctor_jobs.recovery_check(settings))
    if state_ok:
        checks += doctor_jobs.blocked_checks(settings)
    checks.append(api_check())
    return checks


def settings_problem(exc: ValidationError) -> str:
    """Which BATCHLINE_* variables are wrong and why, on one line (never their values)."""
    parts = []
    for err in exc.errors():
        loc = "_".join(str(x) for x in err.get("loc", ()) if isinstance(x, str))
        name = f"BATCHLINE_{loc.upper()}" if loc else "settings"
        parts.append(f"{name}: {err.get('msg', 'invalid')}")
    return "invalid setting " + "; ".join(parts)


def one_line(text: str) -> str:
    return " ".join(text.split())


# --- Redis ---


def _redis_check(checks: list[Check], name: str, url: str, settings: Settings) -> bool:
    shown = redact_url(url)
    try:
        r = connect(
            url, settings, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
        r.ping()
        info: dict[str, Any] = r.info()
    except redis.AuthenticationError as exc:
        if urlsplit(url).password is None:
            detail = f"{shown} requires a password and the URL has none"
        else:
            detail = f"{shown} refused the password: {one_line(str(exc))}"
        checks.append(
            Check(name, FAIL, detail, "put the password in the URL: redis://:PASSWORD@host:6379/0")
        )
        return False
    except redis.ResponseError as exc:
        hint = "the server wants a password: redis://:PASSWORD@host:6379/0"
        checks.append(Check(name, FAIL, f"{shown}: {exc}", hint if "NOAUTH" in str(exc) else None))
        return False
    except redis.RedisError as exc:
        checks.append(
            Check(
                name,
                FAIL,
                f"cannot reach {shown}: {one_line(str(exc))}",
                "is redis-server running there? (docker compose: `docker compose ps redis`); "
                "check BATCHLINE_REDIS_URL",
            )
        )
        return False
    used = int(info.get("used_memory", 0))
    limit = int(info.get("maxmemory", 0))
    policy = str(info.get("maxmemory_policy", "?"))
    detail = (
        f"{shown} answers (Redis {info.get('redis_version', '?')}; {_mib(used)} used"
        f"{f' of {_mib(limit)}' if limit else ', no maxmemory'}; maxmemory-policy {policy})"
    )
    if policy != "noeviction":
        checks.append(
            Check(
                name,
                WARN,
                detail,
                "set maxmemory-policy noeviction: any other policy lets Redis drop queued "
                "tasks and job state under memory pressure",
            )
        )
    elif limit and used >= settings.redis_memory_high_water * limit:
        checks.append(
            Check(
                name,
                WARN,
                detail,
                f"Redis is above Batchline's high-water mark "
                f"({100 * settings.redis_memory_high_water:.0f}% of maxmemory): submits are "
                "refused and results downloads wait until memory is freed; raise maxmemory, "
                "or add results workers so stored results are recorded",
            )
        )
    elif limit and used > MEMORY_WARN_SHARE * limit:
        checks.append(
            Check(
                name,
                WARN,
                detail,
                "Redis is nearly full: raise maxmemory, lower BATCHLINE_RETENTION_S, "
                "or add workers so results drain",
            )
        )
    else:
        checks.append(Check(name, OK, detail))
    return True


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


# --- workers ---


def _busy_workers(settings: Settings, answered: set[str]) -> dict[str, tuple[str, ...]]:
    """Workers that did not answer the broadcast but whose heartbeat (workers/heartbeat.py,
    a thread of their own) is fresh: busy, not gone. Node name -> the queues it consumes."""
    from batchline.liveness import STOPPING, LivenessKeys, read_reports

    r = connect(settings.state, settings, socket_timeout=REDIS_TIMEOUT_S)
    reports, _ = read_reports(r, LivenessKeys(settings.key_prefix), held=False)
    now = time.time()
    fresh = 2 * settings.worker_heartbeat_s
    return {
        rep.node: rep.queues
        for rep in reports
        if rep.alive
        and not rep.stopped
        and rep.state != STOPPING
        and rep.silent_for(now) <= fresh
        and rep.node not in answered
    }


def _worker_checks(settings: Settings, timeout_s: float) -> list[Check]:
    """One broadcast: every worker that answers says which queues it consumes; a worker too
    busy to answer still heartbeats, and counts as a busy consumer of its queues."""
    from batchline.messaging.app import create_app
    from batchline.messaging.queues import Queue

    app = create_app(settings)
    try:
        replies: dict[str, Any] = app.control.inspect(timeout=timeout_s).active_queues() or {}
        depths = _queue_depths(settings)
    finally:
        app.close()
    busy = _busy_workers(settings, set(replies))
    replies.update({node: [{"name": q} for q in queues] for node, queues in busy.items()})
    if not replies:
        return [
            Check(
                "workers",
                FAIL,
                f"no worker answered within {timeout_s:g}s",
                "start one: `celery -A workers worker -l INFO` "
                "(docker compose: `docker compose up -d worker worker-api`)",
            ),
            Check("queues", SKIP, "not checked: no worker answered"),
        ]
    names = sorted(replies)
    shown = ", ".join(
        f"{n} (busy: heartbeating, no answer within {timeout_s:g}s)" if n in busy else n
        for n in names[:8]
    ) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    checks = [Check("workers", OK, f"{len(names) - len(busy)} answered: {shown}")]
    consumers = {q.value: 0 for q in Queue}
    for queues in replies.values():
        for q in queues or []:
            if q.get("name") in consumers:
                consumers[q["name"]] += 1
    parts = [f"{q} {consumers[q]} worker(s), {depths.get(q, 0)} waiting" for q in consumers]
    missing = [q for q, n in consumers.items() if n == 0]
    if missing:
        checks.append(
            Check(
                "queues",
                FAIL,
                f"nothing consumes {', '.join(missing)}; " + "; ".join(parts),
                f"start a worker with `-Q {','.join(missing)}`: tasks on "
                f"{'that queue' if len(missing) == 1 else 'those queues'} wait forever",
            )
        )
    else:
        checks.append(Check("queues", OK, "; ".join(parts)))
    return checks


def _beat_check(settings: Settings) -> Check:
    """The sweeper re-arms whatever went quiet; beat must run it (one instance)."""
    r = connect(settings.state, settings, socket_timeout=2)
    last = r.get(FleetKeys(settings.key_prefix).last_sweep)
    hint = "start one beat: `celery -A workers beat` (docker compose: the beat service)"
    if last is None:
        return Check("beat", FAIL, "the sweeper has never run", hint)
    age = time.time() - float(last)
    if age > 3 * settings.sweep_interval_s + 5:
        return Check("beat", FAIL, f"the sweeper last ran {age:.0f}s ago", hint)
    return Check("beat", OK, f"the sweeper ran {age:.0f}s ago")


def _queue_depths(settings: Settings) -> dict[str, int]:
    from batchline.messaging.queues import Queue
    from batchline.metrics import PRIORITY_SEP, PRIORITY_STEPS

    r = connect(settings.broker, settings, socket_timeout=REDIS_TIMEOUT_S)
    pipe = r.pipeline(transaction=False)
    for q in Queue:
        for step in PRIORITY_STEPS:
            pipe.llen(q.value if step == 0 else f"{q.value}{PRIORITY_SEP}{step}")
    values = pipe.execute()
    n = len(PRIORITY_STEPS)
    return {q.value: sum(values[i * n : (i + 1) * n]) for i, q in enumerate(Queue)}


# --- the API ---


def api_check() -> Check:
    """A cheap authenticated call (list one batch) with the SDK's own retries off."""
    import anthropic

    no_key = Check(
        "api",
        FAIL,
        "ANTHROPIC_API_KEY is not set in this environment",
        "export ANTHROPIC_API_KEY, or point ANTHROPIC_BASE_URL at the emulator "
        "(`batchline emulator`) with any key",
    )
    try:
        client = anthropic.Anthropic(max_retries=0, timeout=API_TIMEOUT_S)
    except anthropic.AnthropicError:
        return no_key
    has_credentials = client.api_key or client.auth_token or getattr(client, "_token_cache", None)
    if not has_credentials:
        return no_key
    base = str(client.base_url).rstrip("/")
    where = f"emulator at {base}" if _is_emulator(base) else f"API at {base}"
    try:
        client.messages.batches.list(limit=1)
    except anthropic.AuthenticationError as exc:
        return Check(
            "api",
            FAIL,
            f"the {where} refused the key (HTTP {exc.status_code}: {_api_message(exc)})",
            "check ANTHROPIC_API_KEY (the workers need the same key)",
        )
    except anthropic.PermissionDeniedError as exc:
        return Check(
            "api",
            FAIL,
            f"the {where} denied access (HTTP {exc.status_code}: {_api_message(exc)})",
            "the key's workspace may not allow the Message Batches API",
        )
    except anthropic.RateLimitError:
        return Check(
            "api", WARN, f"the {where} accepted the key but is rate limiting it right now (429)"
        )
    except anthropic.APIStatusError as exc:
        level = WARN if exc.status_code >= 500 else FAIL
        return Check(
            "api",
            level,
            f"the {where} answered HTTP {exc.status_code}: {_api_message(exc)}",
            "a 5xx or 529 passes by itself; Batchline retries it" if level == WARN else None,
        )
    except anthropic.APIConnectionError as exc:
        return Check(
            "api",
            FAIL,
            f"cannot reach the {where}: {one_line(str(exc.__cause__ or exc))}",
            "check ANTHROPIC_BASE_URL and the network"
            + ("; is `batchline emulator` running?" if base != DEFAULT_API_URL else ""),
        )
    return Check("api", OK, f"the {where} accepted the key")


def _api_message(exc: Any) -> str:
    return one_line(str(getattr(exc, "api_message", None) or exc.message))[:200]


def _is_emulator(base: str) -> bool:
    if base == DEFAULT_API_URL:
        return False
    try:
        with urllib.request.urlopen(base + "/_emulator/stats", timeout=3) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False
