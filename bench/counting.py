"""Counting finished handler calls in Redis: how many, the first start and the last end."""

from __future__ import annotations

from dataclasses import dataclass

import redis

# KEYS: count, first start, last end. ARGV: this call's start and end (epoch seconds).
_RECORD = """
redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1], 'NX')
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
if tonumber(ARGV[2]) > last then redis.call('SET', KEYS[3], ARGV[2]) end
"""


@dataclass(frozen=True)
class Counter:
    """Where one kind of handler call is counted."""

    name: str

    @property
    def keys(self) -> list[str]:
        return [f"bench:{self.name}:done", f"bench:{self.name}:first", f"bench:{self.name}:last"]

    def record(self, r: redis.Redis, started: float, ended: float) -> None:
        r.eval(_RECORD, 3, *self.keys, repr(started), repr(ended))

    def done(self, r: redis.Redis) -> int:
        return int(r.get(self.keys[0]) or 0)

    def span(self, r: redis.Redis) -> tuple[float | None, float | None]:
        first, last = r.mget(self.keys[1:])
        return (float(first) if first else None, float(last) if last else None)

    def reset(self, r: redis.Redis) -> None:
        r.delete(*self.keys)
