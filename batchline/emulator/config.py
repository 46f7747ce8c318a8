"""The emulator's runtime configuration: every CLI flag, validated once for CLI and admin API."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

# The API's own limits (the defaults of --max-requests and --max-body-bytes).
API_MAX_BATCH_REQUESTS = 100_000
# "256 MB" read as 256,000,000 bytes: the stricter of the two readings.
API_MAX_BATCH_BODY_BYTES = 256 * 1000 * 1000

DEFAULT_PROCESSING_SECONDS = 1.0
DEFAULT_CANCELING_SECONDS = 0.2
DEFAULT_ERROR_STATUSES = (500, 529)
DEFAULT_SEED = 0
# The API's processing window: requests not done this long after create end `expired`.
DEFAULT_EXPIRY_SECONDS = 24 * 3600.0
# How far the server's clock may be set from the host's (about 30 years either way).
MAX_CLOCK_OFFSET_S = 1e9
# Seconds a client is told to wait after an injected 429 unless the fault says otherwise.
DEFAULT_INJECTED_RETRY_AFTER_S = 1.0

ENDPOINTS = ("create", "retrieve", "list", "cancel", "delete", "results")
FAULT_ENDPOINTS = (*ENDPOINTS, "any")
# "drop": close the connection before answering; "lost": do the work, then close it.
CONNECTION_FAULTS = ("drop", "lost")
# "shuffled": a shuffle fixed by the batch id; "request": request order; "random": a fresh
# shuffle on every download.
RESULTS_ORDERS = ("shuffled", "request", "random", "blocks")


class ConfigError(ValueError):
    """Raised when a flag or an admin config value is out of range or of the wrong type."""


@dataclass
class FailNext:
    """One deterministic fault waiting for the next call to `endpoint`."""

    endpoint: str
    status: int | str  # an HTTP status, "drop" or "lost"
    retry_after_s: float | None = None
    # A create that makes the batch and then answers `status` all the same.
    after_create: bool = False
    # Only a call made with this key (wire.key_id) takes the fault; any call when empty.
    key_id: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"endpoint": self.endpoint, "status": self.status}
        if self.retry_after_s is not None:
            out["retry_after"] = self.retry_after_s
        if self.after_create:
            out["after_create"] = True
        if self.key_id:
            out["key_id"] = self.key_id
        return out


@dataclass
class EmulatorConfig:
    """Everything that shapes the emulator's answers; JSON keys equal the flag names."""

    api_keys: list[str] = field(default_factory=list)
    # Workspace name -> its keys. Empty: every accepted key is in the workspace "default";
    # set: only the keys listed here are accepted, and each sees its workspace's batches only.
    workspaces: dict[str, list[str]] = field(default_factory=dict)
    processing_seconds: float = DEFAULT_PROCESSING_SECONDS
    canceling_seconds: float = DEFAULT_CANCELING_SECONDS
    rpm_limit: int = 0
    queue_limit: int = 0
    error_rate: float = 0.0
    error_statuses: list[int] = field(default_factory=lambda: list(DEFAULT_ERROR_STATUSES))
    latency_ms: float = 0.0
    drop_rate: float = 0.0
    lost_create_rate: float = 0.0
    error_after_create_rate: float = 0.0
    transient_404: bool = False
    seed: int = DEFAULT_SEED
    max_requests: int = API_MAX_BATCH_REQUESTS
    max_body_bytes: int = API_MAX_BATCH_BODY_BYTES
    results_order: str = "shuffled"
    # Lines per block of --results-order blocks.
    results_block_lines: int = 1000
    # When set, an ended batch's results_url is this + its path: absolute, as the API's is.
    results_base_url: str = ""
    expiry_seconds: float = DEFAULT_EXPIRY_SECONDS
    # The server's clock is the host's plus this: timestamps, lifecycle and the Date header.
    clock_offset_s: float = 0.0
    lost_create_next: int = 0
    # The next N results downloads stop after half their lines (connection cut mid-stream).
    truncate_results_next: int = 0
    # Results are sent at most this many lines per second (0: as fast as the link allows), as
    # over a slow or distant connection: a batch's results then take seconds to read.
    results_lines_per_s: float = 0.0
    # The next N results downloads carry one extra line for a custom_id never submitted.
    unknown_results_next: int = 0
    # The next N batches created never end on their own: they stay in_progress past
    # expires_at until canceled.
    stall_next_create: int = 0
    # Batch ids answered 404 to every key and left out of list, until taken off this list.
    hidden_batches: list[str] = field(default_factory=list)
    fail_next: list[FailNext] = field(default_factory=list)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> EmulatorConfig:
        config = cls()
        config.apply(values)
        return config

    def apply(self, changes: Mapping[str, Any]) -> set[str]:
        """Validate every change first, then set them all; return the names changed."""
        parsed: dict[str, Any] = {}
        for name, raw in changes.items():
            parser = _PARSERS.get(name)
            if parser is None:
                raise ConfigError(f"unknown config key {name!r}; known: {', '.join(_PARSERS)}")
            try:
                parsed[name] = parser(raw)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{name}: {exc}") from None
        for name, value in parsed.items():
            setattr(self, name, value)
        return set(parsed)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["fail_next"] = [fault.to_json() for fault in self.fail_next]
        return out


def _number(raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise TypeError(f"expected a number, got {raw!r}")
    return float(raw)


def _non_negative_float(raw: Any) -> float:
    value = _number(raw)
    if not value >= 0:
        raise ValueError(f"must be >= 0, got {raw!r}")
    return value


def _positive_float(raw: Any) -> float:
    value = _number(raw)
    if not value > 0 or math.isinf(value):
        raise ValueError(f"must be > 0, got {raw!r}")
    return value


def _clock_offset(raw: Any) -> float:
    value = _number(raw)
    if not abs(value) <= MAX_CLOCK_OFFSET_S:
        raise ValueError(f"must be between -{MAX_CLOCK_OFFSET_S:g} and {MAX_CLOCK_OFFSET_S:g}")
    return value


def _rate(raw: Any) -> float:
    value = _number(raw)
    if not 0 <= value <= 1:
        raise ValueError(f"must be between 0 and 1, got {raw!r}")
    return value


def _integer(raw: Any) -> int:
    if isinstance(raw, bool):
        raise TypeError(f"expected an integer, got {raw!r}")
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, (int, str)):
        return int(raw)
    raise TypeError(f"expected an integer, got {raw!r}")


def _non_negative_int(raw: Any) -> int:
    value = _integer(raw)
    if value < 0:
        raise ValueError(f"must be >= 0, got {raw!r}")
    return value


def _positive_int(raw: Any) -> int:
    value = _integer(raw)
    if value < 1:
        raise ValueError(f"must be >= 1, got {raw!r}")
    return value


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str) and raw.lower() in ("true", "false", "1", "0", "yes", "no"):
        return raw.lower() in ("true", "1", "yes")
    raise TypeError(f"expected a boolean, got {raw!r}")


def _items(raw: Any) -> list[Any]:
    """A list given as a JSON array or as a comma-separated string."""
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if isinstance(raw, (list, tuple)):
        return list(raw)
    raise TypeError(f"expected a list or a comma-separated string, got {raw!r}")


def _api_keys(raw: Any) -> list[str]:
    keys = _items(raw)
    if not all(isinstance(key, str) and key for key in keys):
        raise TypeError("keys must be non-empty strings")
    return keys


def _batch_ids(raw: Any) -> list[str]:
    ids = _items(raw)
    if not all(isinstance(batch_id, str) and batch_id for batch_id in ids):
        raise TypeError("batch ids must be non-empty strings")
    return ids


def _workspace_pairs(raw: str) -> dict[str, Any]:
    """`ws1=key1,key2;ws2=key3` as a mapping of names to comma-separated keys."""
    pairs: dict[str, Any] = {}
    for part in raw.split(";"):
        if not part.strip():
            continue
        name, equals, keys = part.partition("=")
        if not equals:
            raise ValueError(f"expected NAME=KEY1,KEY2 between semicolons, got {part.strip()!r}")
        if name.strip() in pairs:
            raise ValueError(f"workspace {name.strip()!r} is given twice")
        pairs[name.strip()] = keys
    return pairs


def _workspaces(raw: Any) -> dict[str, list[str]]:
    mapping = _workspace_pairs(raw) if isinstance(raw, str) else raw
    if not isinstance(mapping, dict):
        raise TypeError(f"expected an object of workspace names to key lists, got {raw!r}")
    workspaces: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for name, keys in mapping.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"a workspace name is a non-empty string, got {name!r}")
        workspaces[name] = _api_keys(keys)
        for key in workspaces[name]:
            # The error names the workspaces only: it must never show a key.
            if owner.setdefault(key, name) != name:
                raise ValueError(
                    f"workspaces {owner[key]!r} and {name!r} share a key; "
                    "a key belongs to one workspace"
                )
    return workspaces


def _results_order(raw: Any) -> str:
    if raw not in RESULTS_ORDERS:
        raise ValueError(f"must be one of {RESULTS_ORDERS}, got {raw!r}")
    return str(raw)


def _base_url(raw: Any) -> str:
    if not isinstance(raw, str):
        raise TypeError(f"expected a URL string, got {raw!r}")
    if not raw:
        return ""
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"expected http(s)://HOST[:PORT][/PATH], got {raw!r}")
    return raw.rstrip("/")


def _http_status(raw: Any) -> int:
    status = _integer(raw)
    if not 400 <= status <= 599:
        raise ValueError(f"an error status must be between 400 and 599, got {raw!r}")
    return status


def _error_statuses(raw: Any) -> list[int]:
    statuses = [_http_status(item) for item in _items(raw)]
    if not statuses:
        raise ValueError("at least one status is needed")
    return statuses


def _fail_next(raw: Any) -> list[FailNext]:
    if not isinstance(raw, list):
        raise TypeError(f"expected a list of faults, got {raw!r}")
    faults = []
    for item in raw:
        if not isinstance(item, dict):
            raise TypeError(f"a fault is an object, got {item!r}")
        unknown = set(item) - {"endpoint", "status", "retry_after", "after_create", "key_id"}
        if unknown:
            raise ValueError(f"unknown fault keys {sorted(unknown)}")
        endpoint = item.get("endpoint", "any")
        if endpoint not in FAULT_ENDPOINTS:
            raise ValueError(f"endpoint must be one of {FAULT_ENDPOINTS}, got {endpoint!r}")
        status = item.get("status")
        if status not in CONNECTION_FAULTS:
            status = _http_status(status)
        after_create = _boolean(item.get("after_create", False))
        if after_create and (endpoint != "create" or isinstance(status, str)):
            raise ValueError("after_create needs endpoint 'create' and an HTTP status")
        retry_after = item.get("retry_after")
        key = item.get("key_id", "")
        if not isinstance(key, str):
            raise TypeError(f"key_id must be a string, got {key!r}")
        faults.append(
            FailNext(
                endpoint=endpoint,
                status=status,
                retry_after_s=None if retry_after is None else _non_negative_float(retry_after),
                after_create=after_create,
                key_id=key,
            )
        )
    return faults


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "api_keys": _api_keys,
    "workspaces": _workspaces,
    "processing_seconds": _non_negative_float,
    "canceling_seconds": _non_negative_float,
    "rpm_limit": _non_negative_int,
    "queue_limit": _non_negative_int,
    "error_rate": _rate,
    "error_statuses": _error_statuses,
    "latency_ms": _non_negative_float,
    "drop_rate": _rate,
    "lost_create_rate": _rate,
    "error_after_create_rate": _rate,
    "transient_404": _boolean,
    "seed": _integer,
    "max_requests": _positive_int,
    "max_body_bytes": _positive_int,
    "results_order": _results_order,
    "results_block_lines": _positive_int,
    "results_base_url": _base_url,
    "expiry_seconds": _positive_float,
    "clock_offset_s": _clock_offset,
    "lost_create_next": _non_negative_int,
    "truncate_results_next": _non_negative_int,
    "results_lines_per_s": _non_negative_float,
    "unknown_results_next": _non_negative_int,
    "stall_next_create": _non_negative_int,
    "hidden_batches": _batch_ids,
    "fail_next": _fail_next,
}
