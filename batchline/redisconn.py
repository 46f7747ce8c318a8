"""Connections to Redis: one server (`redis://`, `rediss://`, `unix://`), or the primary that
Redis Sentinel names (`sentinel://:PASSWORD@host1:26379;sentinel://:PASSWORD@host2:26379/0`,
the form kombu takes for the broker and Celery for the result backend).

With Sentinel, every connection asks the sentinels which server is the primary; after a
failover, a connection that fails is made again to the new primary (redis-py's
SentinelConnectionPool), so the job state, the broker and the result backend all follow it.
The password in the URL is the Redis servers' (`requirepass`); the sentinels' own is
`BATCHLINE_REDIS_SENTINEL_PASSWORD`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from batchline.settings import Settings

SENTINEL_SCHEME = "sentinel://"
SENTINEL_PORT = 26379
SOCKET_TIMEOUT_S = 5.0


def is_sentinel(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME)


def parse_sentinels(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The sentinels' addresses, and the primary's db, username and password, from a
    `sentinel://...;sentinel://...` URL."""
    hosts: list[tuple[str, int]] = []
    primary: dict[str, Any] = {}
    for part in url.split(";"):
        part = part.strip()
        if not part:
            continue
        if not is_sentinel(part):
            raise ValueError("every part of a Sentinel URL starts with sentinel://")
        u = urlsplit(part)
        hosts.append((u.hostname or "127.0.0.1", u.port or SENTINEL_PORT))
        if u.password and "password" not in primary:
            primary["password"] = unquote(u.password)
        if u.username and "username" not in primary:
            primary["username"] = unquote(u.username)
        db = u.path.strip("/")
        if db and "db" not in primary:
            primary["db"] = int(db)
    if not hosts:
        raise ValueError("a Sentinel URL names at least one sentinel")
    return hosts, primary


def sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    """How to talk to the sentinels themselves."""
    kw: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT_S}
    if settings.redis_sentinel_password is not None:
        kw["password"] = settings.redis_sentinel_password.get_secret_value()
    return kw


def connect(url: str, settings: Settings, **kw: Any) -> redis.Redis:
    """A client of the server `url` names, or of the primary its sentinels name."""
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **kw)
    hosts, primary = parse_sentinels(url)
    sentinels = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs(settings))
    return sentinels.master_for(settings.redis_sentinel_master, **{**primary, **kw})


def transport_options(url: str, settings: Settings) -> dict[str, Any]:
    """What kombu's broker transport and Celery's result backend need besides a Sentinel
    URL: the primary's name and how to reach the sentinels."""
    if not is_sentinel(url):
        return {}
    return {
        "master_name": settings.redis_sentinel_master,
        "sentinel_kwargs": sentinel_kwargs(settings),
    }
