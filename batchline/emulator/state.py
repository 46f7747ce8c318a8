"""Everything one emulator process remembers, in one object the handlers share."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from batchline.emulator.batches import Batch, BatchStore
from batchline.emulator.config import EmulatorConfig
from batchline.emulator.faults import FaultInjector
from batchline.emulator.ratelimit import RateLimiter
from batchline.emulator.stats import Stats
from batchline.emulator.wire import BatchIdFactory


@dataclass
class EmulatorState:
    """Config, batches, counters and the registries that outlive a single batch."""

    config: EmulatorConfig
    # The host's clock; the server's own (clock()) runs --clock-offset-s apart from it.
    host_clock: Callable[[], float] = time.time
    store: BatchStore = field(default_factory=BatchStore)
    stats: Stats = field(default_factory=Stats)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    ids: BatchIdFactory = field(default_factory=BatchIdFactory)
    # Params digests of requests whose "-once" directive has fired.
    once_seen: set[bytes] = field(default_factory=set)
    # Prompt prefixes marked with cache_control that have been "written" to the cache.
    cache_seen: set[bytes] = field(default_factory=set)
    # Results downloads served, which seeds the "random" results order.
    downloads: int = 0
    faults: FaultInjector = field(init=False)

    def __post_init__(self) -> None:
        self.faults = FaultInjector(self.config)

    def clock(self) -> float:
        """The server's clock: what batches' timestamps, their lifecycle and Date follow."""
        return self.host_clock() + self.config.clock_offset_s

    def visible(self, batch: Batch, workspace: str) -> bool:
        """Whether a key of `workspace` can see the batch: the API answers 404 otherwise."""
        return batch.workspace == workspace and batch.id not in self.config.hidden_batches

    def next_download(self) -> int:
        """The number of this results download since the start (or the last reset)."""
        self.downloads += 1
        return self.downloads - 1

    def reset(self) -> None:
        """Forget batches, counters, one-shot faults and hidden ids; keep the configured flags."""
        self.store = BatchStore()
        self.stats = Stats()
        self.limiter.reset()
        self.once_seen.clear()
        self.cache_seen.clear()
        self.config.fail_next.clear()
        self.config.lost_create_next = 0
        self.config.truncate_results_next = 0
        self.config.unknown_results_next = 0
        self.config.stall_next_create = 0
        self.config.hidden_batches = []
        self.downloads = 0
        self.faults.reseed()


STATE = web.AppKey("batchline_emulator_state", EmulatorState)
