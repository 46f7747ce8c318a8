"""What every pipeline step gets: settings, state, limiter, the API client and a dispatcher."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from batchline import api, events, logs
from batchline.errors import JobNotFound
from batchline.lease import Lease
from batchline.limiter import Limiter
from batchline.messaging.names import TaskName
from batchline.settings import Settings
from batchline.store import Store

if TYPE_CHECKING:
    import anthropic


class Defer(Exception):
    """Raised by a step to run its task again after `delay_s` (a countdown, never a sleep)."""

    def __init__(self, delay_s: float, reason: str):
        super().__init__(reason)
        self.delay_s = max(0.0, delay_s)
        self.reason = reason


class Dispatcher(Protocol):
    """Sends the next tasks; implemented on top of Celery by the worker runtime."""

    def send(self, name: str, args: tuple[Any, ...], countdown: float | None = None) -> None: ...

    def send_many(self, name: str, args: Iterable[tuple[Any, ...]]) -> int: ...

    def send_hooks(
        self,
        hooks: Sequence[tuple[str, tuple[Any, ...], str, str | None]],
        then: Callable[[Any], None],
    ) -> None: ...


@dataclass
class Context:
    """One worker process's handles, built once per process."""

    settings: Settings
    store: Store
    dispatch: Dispatcher
    client_factory: Callable[[], anthropic.Anthropic]
    limiter: Limiter = field(init=False)
    _client: anthropic.Anthropic | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.limiter = Limiter(self.store, self.dispatch.send)

    @property
    def client(self) -> anthropic.Anthropic:
        if self._client is None:
            self._client = self.client_factory()
            api.count_errors(self._client, self.limiter.count_api_error)
        return self._client

    def lease(self, name: str) -> Lease:
        """An exclusive, renewable lease on a step, held at most `lease_s` unrenewed."""
        return Lease(self.store.r, self.store.fleet.lease(name), self.settings.lease_s)

    def emit(self, job_id: str, type_: str, *, final: bool = False, **data: Any) -> bool:
        """Append a job event and wake the webhook dispatcher (a failure is logged, never
        fatal to the step); True when written. Every event carries the job's metadata.
        A `final` event (job.completed, job.canceled) is written once per job: the sweep
        writes it for a finished job that has none."""
        try:
            if "metadata" not in data:
                try:
                    data["metadata"] = self.store.options(job_id).metadata
                except JobNotFound:
                    data["metadata"] = None
            event = events.new_event(job_id, type_, data)
            keys = events.EventKeys(self.settings.key_prefix)
            final_of = self.store.keys(job_id).job if final else None
            entry, wake = events.emit(
                self.store.r, keys, event, self.settings.events_retention_s, final_of=final_of
            )
            if wake:
                self.dispatch.send(TaskName.DISPATCH_EVENT, ())
            return entry is not None
        except Exception:
            logs.LOGGER.exception("event.emit_failed", extra={"fields": {"job_id": job_id}})
            return False

    def record(
        self,
        job_id: str,
        type_: str,
        *,
        level: int = logging.INFO,
        log: dict[str, Any] | None = None,
        event: dict[str, Any] | None = None,
        **fields: Any,
    ) -> bool:
        """One state change: its log line and its job event, both named `type_`. `fields` go
        to both, `log` only to the log line, `event` only to the event (see `emit`)."""
        logs.event(type_, level, job_id=job_id, **fields, **(log or {}))
        return self.emit(job_id, type_, **fields, **(event or {}))

    def backoff_s(self, step: int, base: float | None = None, cap: float | None = None) -> float:
        """Exponential backoff with jitter for retries of API calls."""
        base = self.settings.api_retry_base_s if base is None else base
        cap = self.settings.api_retry_max_s if cap is None else cap
        delay = min(cap, base * (2 ** max(0, step)))
        return delay * (0.5 + random.random() / 2)

    def poll_delay_s(self, step: int) -> float:
        """The countdown before the next poll: the interval doubling to its cap, with jitter."""
        s = self.settings
        delay = min(s.poll_max_interval_s, s.poll_interval_s * (2 ** max(0, step)))
        return delay * (1 + random.uniform(-s.poll_jitter, s.poll_jitter))
