"""Injected failures: one-shot faults set by tests, then random ones from a seeded generator."""

from __future__ import annotations

import random
from dataclasses import dataclass

from batchline.emulator.config import DEFAULT_INJECTED_RETRY_AFTER_S, EmulatorConfig


@dataclass(frozen=True)
class Fault:
    """What to do to one call instead of (or, for "lost", after) answering it."""

    # "status", "drop", "lost", or "after_create" (make the batch, then answer `status`)
    kind: str
    # "fail_next", "fail_next_after_create", "lost_create_next", "error_rate", "drop_rate",
    # "lost_create_rate" or "error_after_create_rate"
    source: str
    status: int = 0
    retry_after_s: float | None = None


class FaultInjector:
    """Picks the fault, if any, for each batch-endpoint call, in a fixed order:
    fail_next entries, then lost_create_next, then the random rates. A rate left at 0 draws
    nothing from the generator, so adding one does not change the others' sequence."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._rng = random.Random(config.seed)

    def reseed(self) -> None:
        self._rng = random.Random(self._config.seed)

    def pick(self, endpoint: str, key_id: str | None = None) -> Fault | None:
        """The fault for a call to `endpoint` made with the key `key_id` (see wire.key_id)."""
        config = self._config
        for position, entry in enumerate(config.fail_next):
            if entry.endpoint in (endpoint, "any") and entry.key_id in ("", key_id):
                del config.fail_next[position]
                if isinstance(entry.status, str):
                    return Fault(kind=entry.status, source="fail_next")
                retry_after = entry.retry_after_s
                if retry_after is None and entry.status == 429:
                    retry_after = DEFAULT_INJECTED_RETRY_AFTER_S
                if entry.after_create:
                    source = "fail_next_after_create"
                    return Fault("after_create", source, entry.status, retry_after)
                return Fault("status", "fail_next", entry.status, retry_after)
        if endpoint == "create" and config.lost_create_next > 0:
            config.lost_create_next -= 1
            return Fault(kind="lost", source="lost_create_next")
        if config.drop_rate and self._rng.random() < config.drop_rate:
            return Fault(kind="drop", source="drop_rate")
        if config.error_rate and self._rng.random() < config.error_rate:
            return self._random_status("status", "error_rate")
        lost_rate = config.lost_create_rate if endpoint == "create" else 0.0
        if lost_rate and self._rng.random() < lost_rate:
            return Fault(kind="lost", source="lost_create_rate")
        after_rate = config.error_after_create_rate if endpoint == "create" else 0.0
        if after_rate and self._rng.random() < after_rate:
            return self._random_status("after_create", "error_after_create_rate")
        return None

    def _random_status(self, kind: str, source: str) -> Fault:
        """A status drawn from --error-statuses; a 429 tells the client to wait a second."""
        status = self._rng.choice(self._config.error_statuses)
        retry_after = DEFAULT_INJECTED_RETRY_AFTER_S if status == 429 else None
        return Fault(kind, source, status, retry_after)
