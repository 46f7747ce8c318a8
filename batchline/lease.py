"""Exclusive, renewable leases in Redis: one worker at a time per step. A lease names the
worker process that holds it, so a lease whose holder died is taken over at once; any other
lease runs out `lease_s` after its last renewal."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import NamedTuple

import redis

from batchline import logs
from batchline.scripts import Script

# A lease's value is its token, then (in a worker) SEP and the holder's alive key
# (batchline.liveness), which expires soon after the worker's heartbeats stop.
SEP = "|"

FREE, HELD, ORPHANED = "free", "held", "orphaned"

# Steps that resume where they stopped (a fan-out resumes from its last published slice)
# give their lease up when their worker is shutting down: renewing fails, the step hands
# over to another worker, and the shutdown does not wait for the whole step.
YIELD_AT_SHUTDOWN = (":lease:fanout:",)


# Renew a lease this holder still owns, or take it again if it ran out and nobody took it.
class RenewKeys(NamedTuple):
    lease: str
    report: str | None = None  # this worker's report hash, in a worker


class RenewArgs(NamedTuple):
    token: str
    value: str
    ttl_ms: int
    yields: str  # '1': give the lease up when the worker is stopping


RENEW = Script("lease_renew", RenewKeys, RenewArgs)


class LeaseKey(NamedTuple):
    lease: str


class TokenArg(NamedTuple):
    token: str


RELEASE = Script("lease_release", LeaseKey, TokenArg)


# Take over a lease whose holder is dead: the value is still the one read, and the holder's
# alive key is gone.
class TakeOverKeys(NamedTuple):
    lease: str
    alive: str  # the holder's alive key


class TakeOverArgs(NamedTuple):
    read: str  # the value read
    value: str
    ttl_ms: int


TAKE_OVER = Script("lease_take_over", TakeOverKeys, TakeOverArgs)


@dataclass(frozen=True)
class Holder:
    """This worker process, as leases name it: its alive key and its report hash."""

    alive_key: str
    report_key: str


_holder: Holder | None = None


def set_holder(holder: Holder | None) -> None:
    """Name this process (and the pool processes it forks) in every lease it takes."""
    global _holder
    _holder = holder


def current_holder() -> Holder | None:
    return _holder


def _alive_key(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    _, sep, alive_key = text.partition(SEP)
    return alive_key if sep and alive_key else None


class Lease:
    """`if lease.acquire(): try: ... lease.renew() ... finally: lease.release()`."""

    def __init__(self, r: redis.Redis, key: str, ttl_s: float, token: str | None = None):
        """`token` names the holder; a fixed one lets every run of the same step (a retry, a
        redelivery) count as the same holder."""
        self.r = r
        self.key = key
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.token = token or uuid.uuid4().hex
        self.yields = any(part in key for part in YIELD_AT_SHUTDOWN)

    @property
    def value(self) -> str:
        holder = _holder
        return f"{self.token}{SEP}{holder.alive_key}" if holder else self.token

    def acquire(self) -> bool:
        """Take the lease if it is free, or if its holder is a worker that has died."""
        value = self.value
        if self.r.set(self.key, value, nx=True, px=self.ttl_ms):
            return True
        current = self.r.get(self.key)
        if current is None:
            return bool(self.r.set(self.key, value, nx=True, px=self.ttl_ms))
        alive_key = _alive_key(current)
        if alive_key is None or (_holder is not None and alive_key == _holder.alive_key):
            return False
        taken = bool(
            TAKE_OVER(
                self.r,
                TakeOverKeys(self.key, alive_key),
                TakeOverArgs(current, value, self.ttl_ms),
            )
        )
        if taken:
            logs.warning("lease.taken_over", lease=self.key, dead_holder=alive_key)
        return taken

    def renew(self) -> bool:
        """Extend the lease (taking it again if it ran out unclaimed); False when another
        holder has it now, or when a step that can hand over runs in a worker that is
        shutting down."""
        holder = _holder
        keys = RenewKeys(self.key, None if holder is None else holder.report_key)
        args = RenewArgs(self.token, self.value, self.ttl_ms, "1" if self.yields else "0")
        return bool(RENEW(self.r, keys, args))

    def release(self) -> None:
        RELEASE(self.r, LeaseKey(self.key), TokenArg(self.token))

    def held(self) -> bool:
        """Someone holds this lease (not necessarily this holder), and is not a dead worker."""
        return self.state() == HELD

    def state(self) -> str:
        """FREE, HELD, or ORPHANED (its holder is a worker whose heartbeat stopped)."""
        current = self.r.get(self.key)
        if current is None:
            return FREE
        alive_key = _alive_key(current)
        if alive_key is None or self.r.exists(alive_key):
            return HELD
        return ORPHANED
