"""Batchline's settings: one typed object read from the environment once (BATCHLINE_*)."""

from __future__ import annotations

import base64
import binascii
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# The API refuses a batch over 100,000 requests or 256 MB of body; stay just under the bytes.
API_MAX_BATCH_REQUESTS = 100_000
API_MAX_BATCH_BYTES = 256 * 1000 * 1000
# Svix's schedule: after the first attempt, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_WEBHOOK_RETRY_SCHEDULE_S = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class ModelPrice(BaseModel):
    """Standard (not batch) prices in USD per million tokens."""

    input: float
    output: float
    cache_write: float | None = None  # defaults to 1.25x input
    cache_read: float | None = None  # defaults to 0.1x input


# Standard prices per million tokens, matched by the longest model-name prefix.
# Batch prices are half of these. Override with BATCHLINE_PRICES (JSON).
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "claude-opus-4-5": ModelPrice(input=5.0, output=25.0),
    "claude-opus-4-6": ModelPrice(input=5.0, output=25.0),
    "claude-opus-4-1": ModelPrice(input=15.0, output=75.0),
    "claude-opus-4": ModelPrice(input=15.0, output=75.0),
    "claude-sonnet-4": ModelPrice(input=3.0, output=15.0),
    "claude-3-7-sonnet": ModelPrice(input=3.0, output=15.0),
    "claude-haiku-4-5": ModelPrice(input=1.0, output=5.0),
    "claude-3-5-haiku": ModelPrice(input=0.8, output=4.0),
    "claude-3-haiku": ModelPrice(input=0.25, output=1.25),
}


def _check_whsec(value: SecretStr | None) -> SecretStr | None:
    """A Standard Webhooks secret: `whsec_` and base64 of at least 16 bytes."""
    if value is None:
        return None
    raw = value.get_secret_value()
    body = raw.removeprefix("whsec_")
    try:
        key = base64.b64decode(body + "==", validate=False)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret must be whsec_ followed by base64") from None
    if not raw.startswith("whsec_") or len(key) < 16:
        raise ValueError("a webhook secret must be whsec_ followed by base64 of 16+ bytes")
    return value


class WebhookSubscription(BaseModel):
    """A global webhook endpoint and the event types it wants ("*" for all, "job.*")."""

    url: str
    secret: SecretStr | None = None  # whsec_...; webhook_secret when not given
    secondary_secret: SecretStr | None = None  # a second valid secret during a rotation
    event_types: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    include_bodies: bool = False  # result.* events carry the result record itself

    _whsec = field_validator("secret", "secondary_secret")(_check_whsec)


class Settings(BaseSettings):
    """Everything Batchline can be told; every field is BATCHLINE_<NAME> in the environment."""

    model_config = SettingsConfigDict(env_prefix="BATCHLINE_", extra="ignore", frozen=True)

    # --- Redis: one URL serves broker, result backend and job state unless overridden ---
    redis_url: str = Field(
        DEFAULT_REDIS_URL,
        description="broker, result backend and job state (a password goes in the URL)",
    )
    broker_url: str | None = Field(
        None, description="a separate Redis for the broker (default: the Redis URL)"
    )
    result_backend_url: str | None = Field(
        None, description="a separate Redis for the result backend (default: the Redis URL)"
    )
    state_url: str | None = Field(
        None, description="a separate Redis for the job state (default: the Redis URL)"
    )
    key_prefix: str = Field("bl", description="prefix of every key Batchline writes")
    # With Sentinel URLs (sentinel://:PASSWORD@host1:26379;sentinel://:PASSWORD@host2:26379/0,
    # for any of the URLs above): the primary's name, and the sentinels' own password.
    redis_sentinel_master: str = Field(
        "mymaster",
        description=(
            "with Sentinel URLs "
            "(`sentinel://:PASSWORD@host1:26379;sentinel://:PASSWORD@host2:26379/0`, for any of "
            "the URLs above): the primary's name"
        ),
    )
    redis_sentinel_password: SecretStr | None = Field(
        None, description="with Sentinel URLs: the sentinels' own password"
    )

    # --- input and chunking ---
    max_batch_requests: int = Field(
        API_MAX_BATCH_REQUESTS, ge=1, le=API_MAX_BATCH_REQUESTS, description="requests per batch"
    )
    max_batch_bytes: int = Field(
        250_000_000,
        ge=1024,
        le=API_MAX_BATCH_BYTES,
        description="request body per batch (the API allows 256 MB)",
    )
    max_request_bytes: int = Field(32 * MiB, ge=256, description="one request's size")
    source_dir: Path = Field(
        Path("."), description="the only directory `source` paths may point into"
    )
    default_model: str | None = Field(
        None, description="fleet-wide default model, under each job's defaults"
    )
    default_max_tokens: int | None = Field(
        None, description="fleet-wide default `max_tokens`, under each job's defaults"
    )

    # --- polling (countdown backoff, never sleeping) ---
    poll_interval_s: float = Field(
        15.0,
        gt=0,
        description="first poll countdown: polls back off doubling from this to the max interval",
    )
    poll_max_interval_s: float = Field(300.0, gt=0, description="longest poll countdown")
    poll_jitter: float = Field(0.2, ge=0, le=1, description="± fraction on every poll countdown")
    # With at least this many batches in flight, polls read one shared `list` snapshot
    # (refreshed at most once per poll_interval_s) instead of one `retrieve` each; 0 = never.
    poll_list_threshold: int = Field(
        10,
        ge=0,
        description="with this many batches in flight, polls share one `list` snapshot (0: never)",
    )

    # --- retries ---
    max_attempts: int = Field(3, ge=1, description="attempts per request for retryable outcomes")
    api_retry_base_s: float = Field(
        2.0, gt=0, description="first backoff after a failed API call (doubling)"
    )
    api_retry_max_s: float = Field(
        120.0, gt=0, description="longest backoff after a failed API call"
    )
    api_timeout_s: float = Field(600.0, gt=0, description="the SDK's timeout")
    # The SDK's own retries for retrieve, list, cancel and results (never for create: a
    # retried create whose answer was lost makes a second batch).
    sdk_max_retries: int = Field(
        0,
        ge=0,
        le=2,
        description=(
            "the SDK's own retries (they sleep in the worker; Batchline reschedules instead); "
            "never for a create"
        ),
    )

    # --- Redis memory ---
    # The share of Redis's maxmemory above which submits are refused and results downloads
    # wait (recording results, which frees memory, goes on). No effect without maxmemory.
    redis_memory_high_water: float = Field(
        0.9,
        gt=0,
        le=1,
        description=(
            "share of Redis's `maxmemory` above which submits are refused (naming Redis memory, "
            "nothing stored) and results downloads wait"
        ),
    )

    # --- create once ---
    # After a create's outcome turns unknown (connection lost, timeout, 5xx, a worker that
    # died mid-call), how long a batch it made may take to show in `list`: Batchline waits
    # this long before concluding that no batch was made.
    create_settle_s: float = Field(
        30.0,
        ge=0,
        description=(
            "after a create whose outcome is unknown, how long a batch it made may take to show in"
            " `list` before Batchline concludes none was made"
        ),
    )
    # What the writes that stop a second payment (a create's intent, a batch id's claim)
    # wait for before the API call that depends on them: "replica" (WAIT: one replica's
    # acknowledgement), "fsync" (WAITAOF: the append-only file on disk, Redis 7.2 and
    # later), "auto" (a replica when the server has one, else fsync when it can, else
    # nothing more), or "off". A create whose intent is not durable in time is not sent.
    durable_writes: Literal["auto", "replica", "fsync", "off"] = Field(
        "auto",
        description=(
            "what a create's intent and a batch's claim wait for before the API call: `replica` "
            "(WAIT, one replica's acknowledgement), `fsync` (WAITAOF, Redis 7.2+), `auto` (a "
            "replica when there is one, else fsync when the server can), `off`"
        ),
    )
    durable_timeout_s: float = Field(
        2.0,
        gt=0,
        description=(
            "how long the durable-writes wait may take; an intent not durable in time is not sent "
            "(retried)"
        ),
    )
    # Margin on each side of a create's window, on top of the offset between this host's
    # clock and the API's (measured from the Date header of the `list` answer).
    clock_skew_s: float = Field(
        5.0,
        ge=0,
        description=(
            "margin on each side of a lost create's window, beyond the measured offset between "
            "Redis's clock and the API's"
        ),
    )
    # Runs of a results download that keep failing before its chunk is blocked for an operator.
    fanout_max_runs: int = Field(
        8,
        ge=1,
        description="reads of a batch's results that keep failing before its chunk is blocked",
    )
    # How often the sweep looks again for a blocked batch that answered 404 (a key of another
    # workspace, say): found again, it is polled as before.
    blocked_recheck_s: float = Field(
        300.0,
        gt=0,
        description="how often the sweep looks again for a blocked batch that answered 404",
    )
    # The API has answered 404 for a batch right after creating it: a 404 this soon after
    # the batch's creation is waited out; a later one blocks the chunk.
    not_found_grace_s: float = Field(
        120.0,
        ge=0,
        description=(
            "a 404 this soon after a batch's creation is waited out (the API has shown it); later,"
            " the chunk is blocked"
        ),
    )
    # A batch still in progress this long past its expires_at (the API ends every batch by
    # then) is canceled; still not ended this long after the cancel, its chunk is blocked.
    overdue_grace_s: float = Field(
        3600.0,
        gt=0,
        description=(
            "a batch in progress this long past its expiry is canceled; still not ended this long "
            "after, its chunk is blocked"
        ),
    )

    # --- fleet-wide rate limit and admission control ---
    api_rpm: int = Field(
        50,
        ge=1,
        description=(
            "calls a minute to the batch endpoints, fleet-wide (your tier: 50, 1,000, 2,000, 4,000)"
        ),
    )
    max_in_flight_requests: int = Field(
        100_000,
        ge=1,
        description="requests at the API at once (your tier's processing-queue limit)",
    )

    # --- broker ---
    visibility_timeout_s: int = Field(
        3600,
        ge=1,
        description="the broker's redelivery timeout; at least twice the longest countdown",
    )
    # The Redis transport's acknowledgement emulation keeps each message a worker holds in an
    # "unacked" hash until the task is done: two more round trips per message. A worker that
    # consumes only the results queue may turn it off (its stage runs about 1.5x faster):
    # those messages only point at results already stored in Redis, and the sweep
    # republishes whatever a killed worker took with it. Keep it on for every other queue.
    broker_ack_emulation: bool = Field(
        True,
        description=(
            "the Redis transport's unacked-message tracking; `false` only for results-only workers"
            " (operations.md, Scaling)"
        ),
    )

    # How long a worker may hold an exclusive step (create, fan-out, ingest) without renewing
    # it; a worker that dies holding one is replaced after this long.
    lease_s: float = Field(
        60.0,
        gt=0,
        description=(
            "how long a step (create, fan-out, ingest) may go unrenewed before another worker "
            "takes over"
        ),
    )

    # --- sweeper ---
    sweep_interval_s: float = Field(60.0, gt=0, description="how often beat runs the sweeper")
    stall_after_s: float | None = Field(
        None,
        description=(
            "how long a batch may be quiet before the sweeper re-arms it (none: two max poll "
            "intervals, with jitter, + 60 s)"
        ),
    )

    # --- worker liveness and recovery ---
    # Every worker writes a heartbeat this often, listing the messages it holds.
    worker_heartbeat_s: float = Field(
        5.0,
        gt=0,
        description=(
            "how often each worker writes its heartbeat (with the messages it holds) to Redis"
        ),
    )
    # A worker silent this long is dead: what it held goes to live workers at the next
    # recovery pass, and leases it held can be taken over at once.
    worker_dead_after_s: float = Field(
        20.0,
        gt=0,
        description=(
            "a worker silent this long is dead: the recovery pass hands what it held to live "
            "workers, and its leases are taken over at once (at least 3 heartbeats)"
        ),
    )
    # How often beat runs the recovery pass.
    recovery_interval_s: float = Field(
        15.0, gt=0, description="how often beat runs the recovery pass"
    )

    @model_validator(mode="after")
    def _check_liveness(self) -> Settings:
        # A worker that is merely slow to write must not pass for dead: allow three
        # heartbeats to go missing.
        if self.worker_dead_after_s < 3 * self.worker_heartbeat_s:
            raise ValueError("worker_dead_after_s must be at least three worker_heartbeat_s")
        return self

    # --- retention ---
    retention_s: int = Field(
        7 * 86400, ge=60, description="job data kept this long after the job ends"
    )
    # How long a succeeded answer may be reused for an identical request (jobs with cache on).
    cache_ttl_s: int = Field(
        7 * 86400, ge=1, description="how long a succeeded answer may be reused (jobs with `cache`)"
    )

    # --- money ---
    prices: dict[str, ModelPrice] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES),
        description=(
            'JSON: model-name prefix → `{"input", "output", "cache_write", "cache_read"}` USD per '
            "million tokens (standard prices; batch is half)"
        ),
    )

    # --- in-process result handlers (batchline.handlers) ---
    result_handler: str | None = Field(
        None,
        description=(
            "`package.module:function` called on the results workers as "
            "`handler(job_id, custom_id, record)` once per request of every job that names "
            "no `handler` of its own"
        ),
    )
    handler_threads: int = Field(
        32, ge=1, description="threads per results worker process running handlers at once"
    )
    handler_attempts: int = Field(
        3, ge=1, description="calls of a handler that raises, per request, before its error is kept"
    )
    handler_timeout_s: float = Field(
        300.0,
        gt=0,
        description=(
            "a handler call claimed this long ago is taken to have died with its worker and "
            "is made again (calls must end sooner)"
        ),
    )

    # --- events and webhooks ---
    events_retention_s: int = Field(
        7 * 86400,
        ge=60,
        description="event streams trimmed by age; deliveries and dead letters go after it too",
    )  # streams trimmed by age (MINID)
    progress_event_interval_s: float = Field(
        5.0, ge=0, description="at most one `job.progress` event per job this often"
    )
    webhook_subscriptions: list[WebhookSubscription] = Field(
        default_factory=list,
        description=(
            'JSON list of `{"url", "secret", "secondary_secret", "event_types", "include_bodies"}`'
        ),
    )
    # Signs per-job webhook_url deliveries; the secondary is also valid during a rotation.
    webhook_secret: SecretStr | None = Field(
        None,
        description=(
            "`whsec_...` secret signing per-job webhooks (and subscriptions without their own)"
        ),
    )
    webhook_secondary_secret: SecretStr | None = Field(
        None, description="a second valid `whsec_...` secret during a rotation"
    )
    webhook_allow_loopback: bool = Field(
        False, description="allow webhook URLs on loopback addresses (local development only)"
    )
    webhook_allow_private: bool = Field(
        False,
        description="allow webhook URLs on private and shared address ranges (10/8, fc00::/7, ...)",
    )
    webhook_timeout_s: float = Field(
        10.0, gt=0, description="one webhook attempt, connect to last byte"
    )  # the whole attempt: connect to last byte
    webhook_max_response_bytes: int = Field(
        64 * 1024, ge=0, description="answer bytes read per webhook attempt"
    )
    # Waits between attempts after the first (Svix's: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
    # 10 h), each stretched or shrunk by up to webhook_retry_jitter.
    webhook_retry_schedule_s: list[float] = Field(
        default_factory=lambda: list(DEFAULT_WEBHOOK_RETRY_SCHEDULE_S),
        description="waits between webhook attempts (Svix's schedule)",
    )
    webhook_retry_jitter: float = Field(
        0.2, ge=0, le=0.5, description="each wait varies by up to this fraction"
    )
    # A delivery sent or started but silent this long is sent again (its worker died).
    webhook_lease_s: float = Field(
        60.0,
        gt=0,
        description="a silent webhook attempt is sent again after this (more than the timeout)",
    )
    webhook_scheduler_interval_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="the longest the webhook scheduler sleeps while deliveries wait",
    )
    webhook_log_entries: int = Field(
        1000, ge=10, description="delivery log entries kept per endpoint"
    )  # delivery log entries kept per endpoint

    _whsec = field_validator("webhook_secret", "webhook_secondary_secret")(_check_whsec)

    @field_validator("webhook_retry_schedule_s")
    @classmethod
    def _check_schedule(cls, value: list[float]) -> list[float]:
        if any(v <= 0 for v in value):
            raise ValueError("every webhook retry wait must be positive")
        return value

    @model_validator(mode="after")
    def _check_webhooks(self) -> Settings:
        if self.webhook_lease_s <= self.webhook_timeout_s:
            raise ValueError("webhook_lease_s must be longer than webhook_timeout_s")
        if self.visibility_timeout_s < 2 * self.webhook_scheduler_interval_s:
            raise ValueError("visibility_timeout_s must be at least twice the scheduler interval")
        # Deliveries waiting for a retry live as long as the event retention.
        if self.events_retention_s < 2 * max(self.webhook_retry_schedule_s, default=0):
            raise ValueError("events_retention_s must be at least twice the longest retry wait")
        return self

    # --- observability ---
    task_events: bool = Field(
        True,
        description=(
            "workers send task events (what Flower shows: every stage's tasks, a task per "
            "group of results)"
        ),
    )
    # Task events (what Flower shows) for the one-per-custom_id result tasks: off by default,
    # as they triple the messages of the bulk stage; every other task sends them.
    result_task_events: bool = Field(
        False,
        description=(
            "task events (Flower) for the one-per-`custom_id` result tasks too (they triple the "
            "messages of the bulk stage)"
        ),
    )
    # The results stage's grouped consumer: consecutive process_result messages, one call.
    result_group_size: int = Field(
        64,
        ge=1,
        description=(
            "`process_result` messages a results worker hands to one grouped call (one read, one "
            "record script, one hook publish per group; at most the worker's prefetch); 1 turns "
            "grouping off (so do task events for the result tasks)"
        ),
    )
    result_group_wait_ms: int = Field(
        50, ge=1, description="longest wait for a group of results to fill before it runs"
    )
    result_logs: bool = Field(
        False,
        description=(
            "per-result log lines (`request.*`, the result task's received and succeeded "
            "lines) at INFO; off, they are DEBUG lines and INFO has one line per state change "
            "of a job or a batch"
        ),
    )
    log_level: str = Field("INFO", description="log level; one line per state change")
    log_json: bool = Field(False, description="log JSON lines")
    metrics_host: str = Field(
        "0.0.0.0", description="address of the Prometheus exporter (`batchline metrics`)"
    )
    metrics_port: int = Field(9808, description="port of the Prometheus exporter")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.poll_max_interval_s < self.poll_interval_s:
            raise ValueError("poll_max_interval_s must be at least poll_interval_s")
        # A countdown task waits in the broker's unacked set; the Redis transport
        # redelivers it once visibility_timeout passes, so every countdown must stay
        # well below it or the task runs twice.
        if self.visibility_timeout_s < 2 * self.max_countdown_s:
            raise ValueError(
                f"visibility_timeout_s ({self.visibility_timeout_s}) must be at least twice "
                f"the longest countdown ({self.max_countdown_s:.0f} s)"
            )
        return self

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def result_backend(self) -> str:
        return self.result_backend_url or self.redis_url

    @property
    def state(self) -> str:
        return self.state_url or self.redis_url

    @property
    def max_countdown_s(self) -> float:
        """The longest countdown any task schedules itself with."""
        return max(self.poll_max_interval_s * (1 + self.poll_jitter), self.api_retry_max_s)

    @property
    def stall_s(self) -> float:
        """How long a batch's poll chain may be quiet before the sweeper re-arms it."""
        if self.stall_after_s is not None:
            return self.stall_after_s
        return 2 * self.poll_max_interval_s * (1 + self.poll_jitter) + 60

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with credentials in URLs and secrets masked."""
        from batchline.redaction import redact_url

        out = self.model_dump(mode="json")
        for key in ("redis_url", "broker_url", "result_backend_url", "state_url"):
            if out.get(key):
                out[key] = redact_url(out[key])
        for key in ("webhook_secret", "webhook_secondary_secret", "redis_sentinel_password"):
            if out.get(key):
                out[key] = "***"
        for sub in out.get("webhook_subscriptions", []):
            for k in ("secret", "secondary_secret"):
                if sub.get(k):
                    sub[k] = "***"
        return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()


def reload_settings() -> Settings:
    """Forget the cached settings and read the environment again."""
    get_settings.cache_clear()
    return get_settings()


# --- the configuration page: docs/configuration.md holds this block, a test keeps it equal ---

TABLE_START = (
    "<!-- settings table: generated by"
    " `python -m batchline.settings --write docs/configuration.md` -->"
)
TABLE_END = "<!-- end of the settings table -->"
_SHOWN_DEFAULTS = {"prices": "the models below"}


def _shown(value: Any) -> str:
    """A default as the environment would spell it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)


def settings_table() -> str:
    """Every setting as a Markdown table: environment variable, default, meaning."""
    rows = ["| setting | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        if name in _SHOWN_DEFAULTS:
            default = _SHOWN_DEFAULTS[name]
        else:
            value = field.get_default(call_default_factory=True)
            default = f"`{_shown(value)}`" if value is not None else "none"
        rows.append(f"| `BATCHLINE_{name.upper()}` | {default} | {field.description} |")
    return "\n".join(rows) + "\n"


def prices_table() -> str:
    """The default prices (standard, USD per million tokens) as a Markdown table."""
    rows = [
        "| model-name prefix | input | output | cache write | cache read |",
        "| --- | --- | --- | --- | --- |",
    ]
    for prefix, p in DEFAULT_PRICES.items():
        write = _shown(p.cache_write) if p.cache_write is not None else "1.25 x input"
        read = _shown(p.cache_read) if p.cache_read is not None else "0.1 x input"
        rows.append(f"| `{prefix}` | {_shown(p.input)} | {_shown(p.output)} | {write} | {read} |")
    return "\n".join(rows) + "\n"


def configuration_block() -> str:
    """The generated part of docs/configuration.md, markers included."""
    return (
        f"{TABLE_START}\n\n{settings_table()}\n"
        "Default prices (standard; batch is half), matched by the longest model-name prefix:\n\n"
        f"{prices_table()}\n{TABLE_END}\n"
    )


def replace_block(text: str) -> str:
    """`text` (a page holding the generated block) with the block generated anew."""
    head, found, rest = text.partition(TABLE_START)
    if not found or TABLE_END not in rest:
        raise ValueError("the page has no generated settings table to replace")
    return head + configuration_block().rstrip("\n") + rest.split(TABLE_END, 1)[1]


def _main(argv: list[str]) -> int:
    """`--markdown` prints the block; `--write PAGE` replaces it in PAGE."""
    if argv == ["--markdown"]:
        print(configuration_block(), end="")
        return 0
    if len(argv) == 2 and argv[0] == "--write":
        page = Path(argv[1])
        page.write_text(replace_block(page.read_text()))
        return 0
    print("usage: python -m batchline.settings --markdown | --write docs/configuration.md")
    return 2


if __name__ == "__main__":
    import sys

    raise SystemExit(_main(sys.argv[1:]))
