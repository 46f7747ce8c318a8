"""The few writes that stop a second payment, made durable before the API call that depends on
them: acknowledged by a replica (WAIT) or fsynced to the append-only file (WAITAOF), and the
means to tell that Redis came back older than the API (a restart or a failover).

Redis acknowledges a write once it is in memory. With `appendfsync everysec` a host crash loses
up to the last second of writes, and an asynchronous replica promoted by a failover misses
what it had not received. If the lost second held a chunk's move to `creating`, the chunk is
`pending` again and its next run would create a second batch. So a create's intent and a
batch id's claim wait for a replica's acknowledgement or an fsync (`durable_writes`), and a
chunk that was pending when Redis came back is looked for in `list` before it is created.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, NamedTuple

import redis

from batchline.keys import ServerKeys
from batchline.scripts import A, K, Script, Value

# How long what a Redis server says of itself (replicas, version, AOF) is trusted.
INFO_TTL_S = 5.0


class Durability:
    """Runs a script and, in the same round trip on the same connection, waits until its
    writes would survive this Redis failing, as `mode` says:

    - "replica": WAIT for one replica's acknowledgement;
    - "fsync": WAITAOF for the local append-only file's fsync (Redis 7.2 and later);
    - "auto": "replica" when the server has a connected replica, else "fsync" when it can,
      else nothing more than Redis's own persistence;
    - "off": nothing more.
    """

    def __init__(self, r: redis.Redis, mode: str, timeout_s: float):
        self.r = r
        self.mode = mode
        self.timeout_ms = max(1, int(timeout_s * 1000))
        self._how: tuple[float, str | None] = (0.0, None)

    def how(self) -> str | None:
        """ "replica", "fsync" or None: what a durable write waits for now."""
        if self.mode == "off":
            return None
        if self.mode in ("replica", "fsync"):
            return self.mode
        at, how = self._how
        if time.monotonic() - at < INFO_TTL_S:
            return how
        info: Any = self.r.info()
        if int(info.get("connected_slaves") or 0) > 0:
            how = "replica"
        elif _version(info) >= (7, 2) and int(info.get("aof_enabled") or 0):
            how = "fsync"
        else:
            how = None
        self._how = (time.monotonic(), how)
        return how

    def run(
        self, script: Script[K, A], keys: K, args: A, rest: Iterable[Value] = ()
    ) -> tuple[Any, bool]:
        """The script's result, and whether its writes are durable as the mode asks."""
        how = self.how()
        pipe = self.r.pipeline(transaction=False)
        script(pipe, keys, args, rest)
        if how == "replica":
            pipe.execute_command("WAIT", 1, self.timeout_ms)
        elif how == "fsync":
            pipe.execute_command("WAITAOF", 1, 0, self.timeout_ms)
        replies = pipe.execute()
        if how is None:
            return replies[0], True
        acked = replies[1]
        durable = int(acked) >= 1 if how == "replica" else int(acked[0]) >= 1
        return replies[0], durable


def _version(info: Any) -> tuple[int, int]:
    try:
        major, minor, *_ = str(info.get("redis_version") or "0.0").split(".")
        return int(major), int(minor)
    except ValueError:
        return (0, 0)


# Remember which Redis server this is; when another one answers (a restart, a failover), note
# when it was first seen. Returns the time (Redis's clock) this server was first seen.
class ServerSeenArgs(NamedTuple):
    run_id: str  # the server's


SERVER_SEEN = Script("server_seen", ServerKeys, ServerSeenArgs)


def server_since(r: redis.Redis, prefix: str) -> float:
    """When the Redis server answering now was first seen by Batchline (Redis's clock).

    Read fresh on every call: after a restart from an older append-only file, or a failover,
    the run id differs from the one recorded, whatever the restored data says.
    """
    run_id = r.info("server")["run_id"]
    seen = SERVER_SEEN(r, ServerKeys.under(prefix), ServerSeenArgs(run_id))
    return float(seen)
