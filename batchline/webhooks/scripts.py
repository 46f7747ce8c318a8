"""The Lua scripts behind webhook delivery state: each change to a lane is one script.

Their text is `batchline/lua/webhook_<name>.lua`, each after the helpers they share
(`webhook_lib.lua`); see batchline.scripts for how they are declared and run.
"""

from __future__ import annotations

from typing import NamedTuple

from batchline.scripts import Script, Value

LIB = "webhook_lib"


class EnqueueKeys(NamedTuple):
    delivery: str
    lane: str
    due: str
    endpoints: str
    chain: str


class EnqueueArgs(NamedTuple):
    event_id: str
    event: Value  # JSON
    url: str
    kind: str
    job_id: str
    endpoint_id: str
    lane_ref: str
    lease_s: float
    ttl_s: int
    endpoint: Value  # JSON
    chain_id: str
    chain_ttl_ms: int
    event_type: str


# Queue an event for one endpoint once. Returns {0 known, 1 queued, 2 queued at the head;
# the chain armed or false}.
ENQUEUE = Script("webhook_enqueue", EnqueueKeys, EnqueueArgs, prelude=LIB)


class ClaimKeys(NamedTuple):
    delivery: str
    lane: str
    due: str
    chain: str


class ClaimArgs(NamedTuple):
    event_id: str
    claim_token: str
    lease_s: float
    lane_ref: str
    chain_id: str
    chain_ttl_ms: int


# Own a lane's head for one attempt: {'claimed', attempt, failures, event, url, kind, body,
# chain, previous state}, or {'missing', next head, chain}, 'stale', 'busy' or 'early'.
CLAIM = Script("webhook_claim", ClaimKeys, ClaimArgs, prelude=LIB)


class FinishKeys(NamedTuple):
    delivery: str
    lane: str
    due: str
    dead: str
    log: str
    chain: str


class FinishArgs(NamedTuple):
    event_id: str
    claim_token: str
    outcome: str  # ok|retry|dead
    wait_s: float
    log_entry: Value  # JSON
    lane_ref: str
    delivery_ref: str
    lease_s: float
    log_max: int
    ttl_s: int
    chain_id: str
    chain_ttl_ms: int
    status: Value
    error: str


# Record an attempt's outcome: {outcome or 'ignored', next head, chain}.
FINISH = Script("webhook_finish", FinishKeys, FinishArgs, prelude=LIB)


class TickKeys(NamedTuple):
    due: str
    chain: str


class TickArgs(NamedTuple):
    chain_id: str  # '' for a one-off run
    lease_s: float
    limit: int
    lane_prefix: str  # the lane keys' prefix
    new_chain_id: str
    chain_ttl_ms: int
    force: str  # '1': the new chain replaces whatever chain there was


# Hand out the heads that are due: {'ok' or 'superseded', wait, chain, lane ref, head, ...}.
TICK = Script("webhook_tick", TickKeys, TickArgs, prelude=LIB)


class ReplayKeys(NamedTuple):
    delivery: str
    lane: str
    due: str
    dead: str
    chain: str


class ReplayArgs(NamedTuple):
    event_id: str
    delivery_ref: str
    lane_ref: str
    lease_s: float
    ttl_s: int
    chain_id: str
    chain_ttl_ms: int


# Take a dead delivery back into its lane: {0 not dead, -1 expired, 1 or 2 (at the head),
# chain}.
REPLAY = Script("webhook_replay", ReplayKeys, ReplayArgs, prelude=LIB)
