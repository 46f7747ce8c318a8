"""Exclusive, renewable leases in Redis: one worker at a time per step, and a dead holder's
lease runs out after `lease_s` so another worker can take over."""

from __future__ import annotations

import uuid

import redis

# Renew a lease this holder still owns, or take it again if it ran out and nobody took it.
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    """`if lease.acquire(): try: ... lease.renew() ... finally: lease.release()`."""

    def __init__(self, r: redis.Redis, key: str, ttl_s: float, token: str | None = None):
        """`token` names the holder; a fixed one lets every run of the same step (a retry, a
        redelivery) count as the same holder."""
        self.r = r
        self.key = key
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.token = token or uuid.uuid4().hex

    def acquire(self) -> bool:
        return bool(self.r.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def renew(self) -> bool:
        """Extend the lease (taking it again if it ran out unclaimed); False when another
        holder has it now."""
        return bool(self.r.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))

    def release(self) -> None:
        self.r.eval(_RELEASE, 1, self.key, self.token)

    def held(self) -> bool:
        """Someone holds this lease (not necessarily this holder)."""
        return bool(self.r.exists(self.key))
