"""A Redis primary, a replica and three sentinels on free ports, for failover tests: the
primary can be killed (SIGKILL) and a sentinel promotes the replica."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from batchline.devstack import Proc, RedisServer, free_port, wait_for

MASTER = "mymaster"
PASSWORD = "sentinel-test-password"


class ReplicaServer(RedisServer):
    """A redis-server that replicates another one."""

    def __init__(self, workdir: Path, primary: RedisServer):
        replica_args = [
            *("--replicaof", "127.0.0.1", str(primary.port)),
            *("--masterauth", PASSWORD),
            # A replica promoted by Sentinel must take writes at once.
            *("--replica-read-only", "yes"),
        ]
        super().__init__(workdir, password=PASSWORD, appendonly=True, extra_args=replica_args)
        self.primary = primary


class SentinelServer(Proc):
    """`redis-server --sentinel` watching the primary, with a config file of its own (a
    sentinel rewrites it as the cluster changes)."""

    def __init__(self, workdir: Path, primary: RedisServer, quorum: int = 2):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = workdir / "sentinel-stdout.log"
        self.config = workdir / "sentinel.conf"
        self.config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {workdir}",
                    f"logfile {workdir / 'sentinel.log'}",
                    f"sentinel monitor {MASTER} 127.0.0.1 {primary.port} {quorum}",
                    f"sentinel auth-pass {MASTER} {PASSWORD}",
                    f"sentinel down-after-milliseconds {MASTER} 2000",
                    f"sentinel failover-timeout {MASTER} 10000",
                    f"sentinel parallel-syncs {MASTER} 1",
                    "",
                ]
            )
        )

    def start(self) -> SentinelServer:
        self._spawn(["redis-server", str(self.config), "--sentinel"])
        wait_for(lambda: self.client().ping(), 30, what=f"sentinel on {self.port}")
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=1)

    def primary_port(self) -> int:
        _host, port = self.client().sentinel_get_master_addr_by_name(MASTER)
        return int(port)


class Cluster:
    """A primary, one replica and three sentinels; `url` is the Sentinel URL for Batchline."""

    def __init__(self, workdir: Path):
        self.primary = RedisServer(workdir / "primary", password=PASSWORD, appendonly=True)
        self.replica: ReplicaServer | None = None
        self.sentinels: list[SentinelServer] = []
        self.workdir = workdir

    def start(self) -> Cluster:
        self.primary.start()
        self.replica = ReplicaServer(self.workdir / "replica", self.primary).start()
        wait_for(self._replicating, 60, what="the replica in sync")
        self.sentinels = [
            SentinelServer(self.workdir / f"sentinel-{i}", self.primary).start() for i in range(3)
        ]
        wait_for(self._sentinels_see_all, 60, what="the sentinels to see each other")
        return self

    def _replicating(self) -> bool:
        info: Any = self.primary.client().info("replication")
        return int(info.get("connected_slaves") or 0) == 1 and bool(
            info.get("slave0", {}).get("state") == "online"
        )

    def _sentinels_see_all(self) -> bool:
        for s in self.sentinels:
            m: Any = s.client().sentinel_master(MASTER)
            if int(m.get("num-other-sentinels", 0)) < 2 or int(m.get("num-slaves", 0)) < 1:
                return False
        return True

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://:{PASSWORD}@127.0.0.1:{s.port}/0" for s in self.sentinels)

    def primary_port(self) -> int:
        return self.sentinels[0].primary_port()

    def stop(self) -> None:
        for p in [*self.sentinels, self.replica, self.primary]:
            if p is not None:
                p.stop()
