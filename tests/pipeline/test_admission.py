"""Admission control on a real Redis: a chunk goes when it and every chunk ahead of it fit
under the cap, in order; a release (or an admission) sends the parked creates that now fit at
once, each once."""

from __future__ import annotations

from typing import Any

import redis

from batchline.limiter import Limiter
from batchline.messaging.names import TaskName
from batchline.settings import Settings
from batchline.store import Store


def test_chunks_go_when_they_and_every_chunk_ahead_fit(redis_server: Any) -> None:
    sent: list[tuple[str, tuple[Any, ...]]] = []
    store = Store(
        redis.Redis.from_url(redis_server.url),
        Settings(redis_url=redis_server.url, max_in_flight_requests=100),
    )
    limiter = Limiter(store, lambda name, args: sent.append((name, args)))
    limiter.enqueue((f"j:a:{n}", 40) for n in range(5))

    # Out of order: chunk 1 goes before chunk 0 (both fit), chunk 2 does not (0 is ahead)
    assert limiter.admit("j:a:1", 40)
    assert not limiter.admit("j:a:2", 40)
    assert not limiter.admit("j:a:3", 40)
    assert limiter.admit("j:a:0", 40)
    assert limiter.held() == 80 and sent == []
    # A release sends the parked chunk that now fits, and only it (3 would overflow)
    limiter.release("j:a:0")
    assert sent == [(TaskName.CREATE_BATCH, ("j:a", 2))]
    assert limiter.admit("j:a:2", 40) and limiter.admit("j:a:2", 40)  # admitted once
    assert limiter.held() == 80
    # Two releases make room for 3 and 4; 4 was never parked, so its own create admits it
    limiter.release("j:a:1")
    limiter.release("j:a:2")
    assert sent[1:] == [(TaskName.CREATE_BATCH, ("j:a", 3))]
    assert limiter.admit("j:a:4", 40) and limiter.admit("j:a:3", 40)


def test_an_admission_sends_the_parked_chunk_behind_it(redis_server: Any) -> None:
    sent: list[tuple[str, tuple[Any, ...]]] = []
    store = Store(
        redis.Redis.from_url(redis_server.url),
        Settings(redis_url=redis_server.url, max_in_flight_requests=100),
    )
    limiter = Limiter(store, lambda name, args: sent.append((name, args)))
    # A chunk larger than the cap goes alone; the one behind it waits for its release
    limiter.enqueue([("j:0", 150), ("j:1", 30)])
    assert not limiter.admit("j:1", 30)
    assert limiter.admit("j:0", 150)
    assert sent == []
    limiter.release("j:0")
    assert sent == [(TaskName.CREATE_BATCH, ("j", 1))]
    # A chunk parked behind one whose size was unknown until its create ran
    store.r.rpush(store.fleet.admission, "k:0")  # in line without a size (an older submit)
    limiter.enqueue([("k:1", 10)])
    assert not limiter.admit("k:1", 10)
    assert limiter.admit("k:0", 10)
    assert sent[1:] == [(TaskName.CREATE_BATCH, ("k", 1))]
