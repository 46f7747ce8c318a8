"""What operators read and do: endpoints, the delivery log, dead letters and their replay."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis

from batchline.keys import WebhookKeys, split_delivery_ref, split_lane_ref
from batchline.settings import Settings
from batchline.webhooks.endpoints import endpoint_id
from batchline.webhooks.outbox import Outbox
from batchline.webhooks.urls import display
from batchline.webhooks.wakeups import DELIVER, SCHEDULE
from batchline.wire import loads

if TYPE_CHECKING:
    from batchline.pipeline.context import Dispatcher


INT_FIELDS = ("attempts", "failures", "replays", "last_status")


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def find_endpoint(name: str) -> str:
    """An endpoint id from an id or a URL."""
    if name.startswith("ep_"):
        return name
    return endpoint_id(name)


def endpoints(r: redis.Redis, settings: Settings) -> list[dict[str, Any]]:
    """Configured subscriptions and every endpoint delivered to, with what is waiting."""
    keys = WebhookKeys(settings.key_prefix)
    found: dict[str, dict[str, Any]] = {}
    for sub in settings.webhook_subscriptions:
        eid = endpoint_id(sub.url)
        found[eid] = {
            "endpoint": eid,
            "url": display(sub.url),
            "kind": "subscription",
            "event_types": sub.event_types,
            "include_bodies": sub.include_bodies,
        }
    known: Any = r.hgetall(keys.endpoints)
    for eid, raw in known.items():
        info = loads(raw)
        found.setdefault(
            _s(eid), {"endpoint": _s(eid), "url": display(info["url"]), "kind": info["kind"]}
        )
    lanes: dict[str, list[float]] = {}
    due: Any = r.zrange(keys.due, 0, -1, withscores=True)
    for ref, score in due:
        eid, _job = split_lane_ref(_s(ref))
        lanes.setdefault(eid, []).append(float(score))
    dead: dict[str, int] = {}
    dead_refs: Any = r.zrange(keys.dead, 0, -1)
    for ref in dead_refs:
        eid, _event = split_delivery_ref(_s(ref))
        dead[eid] = dead.get(eid, 0) + 1
    for eid, info in found.items():
        info["lanes_waiting"] = len(lanes.get(eid, []))
        info["next_try_at"] = min(lanes[eid]) if eid in lanes else None
        info["dead_letters"] = dead.get(eid, 0)
    return list(found.values())


def log(r: redis.Redis, settings: Settings, eid: str, limit: int = 50) -> list[dict[str, Any]]:
    """The endpoint's latest delivery attempts, newest first."""
    keys = WebhookKeys(settings.key_prefix)
    entries: Any = r.lrange(keys.log(eid), 0, limit - 1)
    return [loads(x) for x in entries]


def delivery(r: redis.Redis, settings: Settings, ref: str) -> dict[str, Any] | None:
    """One delivery's state: attempts, failures, last status and error, next try."""
    eid, event_id = split_delivery_ref(ref)
    raw: Any = r.hgetall(WebhookKeys(settings.key_prefix).delivery(eid, event_id))
    if not raw:
        return None
    fields = {_s(k): _s(v) for k, v in raw.items() if k not in (b"body", b"event", b"claim")}
    out: dict[str, Any] = {"delivery": ref}
    for key, value in sorted(fields.items()):
        if key in INT_FIELDS:
            out[key] = int(value) if value else None
        elif key.endswith(("_at", "_until")):
            out[key] = float(value) if value else None
        else:
            out[key] = value or None
    out["url"] = display(fields.get("url", ""))
    return out


def dead_letters(
    r: redis.Redis, settings: Settings, eid: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """Deliveries that failed their last attempt, oldest first; expired ones are dropped."""
    keys = WebhookKeys(settings.key_prefix)
    out = []
    rows: Any = r.zrange(keys.dead, 0, -1, withscores=True)
    for raw_ref, score in rows:
        ref = _s(raw_ref)
        if eid is not None and not ref.startswith(eid + ":"):
            continue
        info = delivery(r, settings, ref)
        if info is None:
            r.zrem(keys.dead, ref)
            continue
        info["dead_at"] = float(score)
        out.append(info)
        if len(out) >= limit:
            break
    return out


def replay(
    r: redis.Redis, settings: Settings, dispatch: Dispatcher, refs: Iterable[str]
) -> dict[str, str]:
    """Send dead letters again, each with its own webhook-id and body; ref -> what happened."""
    outbox = Outbox(r, settings)
    done: dict[str, str] = {}
    for ref in refs:
        eid, event_id = split_delivery_ref(ref)
        code, job_id, nxt = outbox.replay(eid, event_id)
        if code == 0:
            done[ref] = "not a dead letter"
            continue
        if code < 0:
            done[ref] = "expired"
            continue
        done[ref] = "queued" if nxt.event_id else "queued behind the job's other deliveries"
        if nxt.event_id:
            dispatch.send(DELIVER, (eid, job_id, nxt.event_id))
        if nxt.chain:
            dispatch.send(SCHEDULE, (nxt.chain,), countdown=settings.webhook_scheduler_interval_s)
    return done
