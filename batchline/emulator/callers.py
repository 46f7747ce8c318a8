"""Who is calling: the API key a call offers, whether it is accepted, and its workspace."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from batchline.emulator.config import EmulatorConfig
from batchline.emulator.wire import key_id

# The one workspace every accepted key is in while --workspaces is empty.
DEFAULT_WORKSPACE = "default"


@dataclass(frozen=True)
class Caller:
    """The key a call is counted under, and its workspace (None when no key is accepted)."""

    key_id: str | None
    workspace: str | None


def offered_keys(headers: Mapping[str, str]) -> list[str]:
    """The keys a call offers, x-api-key first: both header styles are accepted."""
    offered = []
    api_key = headers.get("x-api-key")
    if api_key:
        offered.append(api_key)
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        offered.append(token.strip())
    return offered


def workspace_of(api_key: str, config: EmulatorConfig) -> str | None:
    """The workspace a key belongs to as the config stands now, or None if it is refused."""
    if config.workspaces:
        for name, keys in config.workspaces.items():
            if api_key in keys:
                return name
        return None
    if config.api_keys and api_key not in config.api_keys:
        return None
    return DEFAULT_WORKSPACE


def identify(headers: Mapping[str, str], config: EmulatorConfig) -> Caller:
    """The first accepted key offered, else the first key offered (refused), else nobody.

    Read from the config on every call, so that moving a key to another workspace at
    runtime changes what it sees from its next call on."""
    offered = offered_keys(headers)
    for api_key in offered:
        workspace = workspace_of(api_key, config)
        if workspace is not None:
            return Caller(key_id(api_key), workspace)
    return Caller(key_id(offered[0]) if offered else None, None)


def refusal(caller: Caller) -> str | None:
    """Why the call is not authenticated, or None."""
    if caller.key_id is None:
        return "x-api-key header or Authorization: Bearer token is required"
    if caller.workspace is None:
        return "invalid x-api-key"
    return None
