"""Handing unacknowledged messages back to their queues through kombu's own Redis QoS."""

from __future__ import annotations

import redis
from celery import Celery

from batchline.redisconn import connect
from batchline.settings import Settings

_broker: redis.Redis | None = None


def broker_redis(settings: Settings) -> redis.Redis:
    """This process's plain Redis client on the broker (for reading kombu's unacked set)."""
    global _broker
    if _broker is None:
        _broker = connect(settings.broker, settings, health_check_interval=30)
    return _broker


def restore(app: Celery, tags: list[str]) -> int:
    """Put these unacked messages back on their queues, at the head (they are older than
    anything waiting), exactly as kombu's visibility timeout would: each in one WATCHed
    transaction, so a message acknowledged meanwhile is not restored."""
    # The channel needs ack emulation for its QoS to know the unacked set, whatever this
    # worker's own setting.
    with app.connection_for_write(transport_options={"ack_emulation": True}) as conn:
        qos = conn.default_channel.qos
        for tag in tags:
            qos.restore_by_tag(tag, leftmost=False)
    return len(tags)
