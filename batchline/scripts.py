"""Lua scripts that make each state change in Redis atomic, so a redelivered task is a no-op."""

from __future__ import annotations

from typing import Any

import redis

# Create a job record if the id is new; otherwise report the existing state and fingerprint.
CLAIM_JOB = """
local st = redis.call('HGET', KEYS[1], 'state')
if st then
  return {st, redis.call('HGET', KEYS[1], 'fingerprint') or ''}
end
redis.call('HSET', KEYS[1], 'state', 'ingesting', 'fingerprint', ARGV[1], 'created_at', ARGV[2])
return {'new', ARGV[1]}
"""

# Compare-and-set a chunk's state. ARGV: allowed current states (comma separated), new
# state, 1 when the new state closes the chunk (the job's open_chunks count drops), then
# field/value pairs to set. Returns 1, or the current state when it did not match.
TRANSITION = """
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return 'missing' end
local ok = false
for s in string.gmatch(ARGV[1], '[^,]+') do
  if s == cur then ok = true end
end
if not ok then return cur end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
if #ARGV > 3 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 4))
end
if ARGV[3] == '1' then
  redis.call('HINCRBY', KEYS[2], 'open_chunks', -1)
end
return 1
"""

# A create's intent: a pending chunk moves to `creating` with its call live, stamped with
# Redis's clock (the window a lost answer is looked for in is measured on one clock, whatever
# the clocks of the workers). KEYS: chunk meta. Returns the time, or '' when not pending.
BEGIN_CREATE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return '' end
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', t[2])
redis.call('HSET', KEYS[1], 'state', 'creating', 'call', 'live', 'sent_at', now,
  'last_intent_at', now, 'touched_at', now, 'waiting', '', 'ended_at', '', 'verify_step', 0)
if not redis.call('HGET', KEYS[1], 'intent_at') then
  redis.call('HSET', KEYS[1], 'intent_at', now)
end
redis.call('HINCRBY', KEYS[1], 'create_attempts', 1)
return now
"""

# A create's outcome became unknown (or its worker stopped): the call ended now, by Redis's
# clock, unless an earlier run already said so. KEYS: chunk meta. ARGV: why.
# Returns the call's end time, or '' when the chunk is not creating.
CREATE_UNKNOWN = """
if redis.call('HGET', KEYS[1], 'state') ~= 'creating' then return '' end
if redis.call('HGET', KEYS[1], 'call') == 'unknown' then
  return redis.call('HGET', KEYS[1], 'ended_at')
end
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', t[2])
redis.call('HSET', KEYS[1], 'call', 'unknown', 'ended_at', now, 'create_error', ARGV[1],
  'touched_at', now)
return now
"""

# A pending chunk that existed when Redis came back older than the API (a restart from an
# older append-only file, a failover): its move to `creating` may be what was lost, so it is
# looked for as a create whose outcome is unknown. KEYS: chunk meta. ARGV: since, until.
LOOK_FIRST = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', t[2])
redis.call('HSET', KEYS[1], 'state', 'creating', 'call', 'unknown', 'sent_at', ARGV[1],
  'ended_at', ARGV[2], 'lost_check_at', now, 'touched_at', now,
  'create_error', 'Redis came back older than the API: looking before creating')
return 1
"""

# No batch was made (a 429, or reconciliation found none): back to `pending`, to be created
# again. KEYS: chunk meta, suspects set. Returns 1, or 0 when the chunk was not creating.
CREATE_REFUSED = """
if redis.call('HGET', KEYS[1], 'state') ~= 'creating' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'pending', 'call', '')
redis.call('DEL', KEYS[2])
return 1
"""

# A batch shown to be a chunk's (its create answered, or its results carry the chunk's tag).
# KEYS: chunk meta, claim key, job, the job's duplicates set, chunk suspects.
# ARGV: batch id, chunk ref, claim ttl, then field/value pairs for the adopted chunk.
# Returns 'adopted', 'same' (already this chunk's batch), 'duplicate' (the chunk has another
# batch: this one is claimed as a duplicate and counted once), 'duplicate_known', or the
# owner's ref when another chunk has shown the batch to be its own.
ADOPT = """
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[2] and string.sub(owner, 1, 4) ~= 'dup:' then return owner end
local cur = redis.call('HGET', KEYS[1], 'batch_id')
if cur == ARGV[1] then return 'same' end
if redis.call('HGET', KEYS[1], 'state') == 'creating' and (not cur or cur == '') then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
  redis.call('HSET', KEYS[1], 'state', 'in_progress', 'batch_id', ARGV[1], 'call', '',
    'waiting', '')
  if #ARGV > 3 then redis.call('HSET', KEYS[1], unpack(ARGV, 4)) end
  redis.call('DEL', KEYS[5])
  return 'adopted'
end
redis.call('SET', KEYS[2], 'dup:' .. ARGV[2], 'EX', ARGV[3])
if redis.call('SADD', KEYS[4], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[3], 'duplicates_canceled', 1)
  return 'duplicate'
end
return 'duplicate_known'
"""

# A chunk refused as too large is closed as `split`; its halves (already written) join the
# job's chunks. KEYS: old chunk meta, chunk list, job. ARGV: now, new chunk numbers...
SPLIT = """
if redis.call('HGET', KEYS[1], 'state') ~= 'creating' then return 0 end
local into = {}
for i = 2, #ARGV do into[#into + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], 'state', 'split', 'call', '', 'touched_at', ARGV[1],
  'split_into', table.concat(into, ','))
redis.call('RPUSH', KEYS[2], unpack(into))
redis.call('HINCRBY', KEYS[3], 'open_chunks', #into - 1)
return 1
"""

# Record results, each at most once per chunk. KEYS: job, chunk meta, chunk done set,
# chunk raw results, records, chunk retry list, hooks pending, last errors, requests,
# fleet stats (the same counters summed over every job, for metrics).
# ARGV: n, now, then per item 9 values: api id, outcome (succeeded|failed|canceled|retry),
# record or error blob, hook flag, input, output, cache-write, cache-read tokens, cost (nUSD).
# Returns {processed in chunk, chunk count, remaining in job, fresh items...}.
FINISH = """
local n = tonumber(ARGV[1])
local fresh = {}
local job_incr = {succeeded = 0, failed = 0, canceled = 0}
local usage = {0, 0, 0, 0, 0}
local has_meta = redis.call('EXISTS', KEYS[2]) == 1
for i = 0, n - 1 do
  local b = 3 + i * 9
  local id, outcome = ARGV[b], ARGV[b + 1]
  if redis.call('SADD', KEYS[3], id) == 1 then
    fresh[#fresh + 1] = id
    redis.call('HDEL', KEYS[4], id)
    if outcome == 'retry' then
      redis.call('RPUSH', KEYS[6], id)
      redis.call('HSET', KEYS[8], id, ARGV[b + 2])
    else
      redis.call('HSET', KEYS[5], id, ARGV[b + 2])
      redis.call('HDEL', KEYS[9], id)
      redis.call('HDEL', KEYS[8], id)
      job_incr[outcome] = job_incr[outcome] + 1
      if ARGV[b + 3] == '1' then redis.call('ZADD', KEYS[7], ARGV[2], id) end
      for u = 1, 5 do usage[u] = usage[u] + tonumber(ARGV[b + 3 + u]) end
    end
  end
end
for k, v in pairs(job_incr) do
  if v > 0 then
    redis.call('HINCRBY', KEYS[1], k, v)
    redis.call('HINCRBY', KEYS[10], 'requests:' .. k, v)
  end
end
local names = {'input_tokens', 'output_tokens', 'cache_creation_input_tokens',
               'cache_read_input_tokens', 'cost_nusd'}
for u = 1, 5 do
  if usage[u] > 0 then
    redis.call('HINCRBY', KEYS[1], names[u], usage[u])
    redis.call('HINCRBY', KEYS[10], names[u], usage[u])
  end
end
local processed, count = 0, 0
if has_meta and #fresh > 0 then
  processed = redis.call('HINCRBY', KEYS[2], 'processed', #fresh)
  redis.call('HSET', KEYS[2], 'progress_at', ARGV[2])
else
  processed = tonumber(redis.call('HGET', KEYS[2], 'processed') or '0')
end
count = tonumber(redis.call('HGET', KEYS[2], 'count') or '0')
local h = redis.call('HMGET', KEYS[1], 'accepted', 'succeeded', 'failed', 'canceled')
local remaining = tonumber(h[1] or '0') - tonumber(h[2] or '0') - tonumber(h[3] or '0')
  - tonumber(h[4] or '0')
local out = {processed, count, remaining}
for _, id in ipairs(fresh) do out[#out + 1] = id end
return out
"""

# Move an ended chunk's retryable requests to the job's pool and close the chunk.
# KEYS: chunk meta, chunk retry list, job, pool. Returns {moved?, open chunks, pool length}.
PLAN = """
local function open_chunks() return tonumber(redis.call('HGET', KEYS[3], 'open_chunks') or '0') end
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'ended' then
  return {0, open_chunks(), redis.call('LLEN', KEYS[4])}
end
local processed = tonumber(redis.call('HGET', KEYS[1], 'processed') or '0')
local count = tonumber(redis.call('HGET', KEYS[1], 'count') or '0')
if processed < count then
  return {-1, open_chunks(), redis.call('LLEN', KEYS[4])}
end
while true do
  local id = redis.call('LMOVE', KEYS[2], KEYS[4], 'LEFT', 'RIGHT')
  if not id then break end
end
redis.call('HSET', KEYS[1], 'state', 'done', 'touched_at', ARGV[1], 'done_at', ARGV[1])
local open = redis.call('HINCRBY', KEYS[3], 'open_chunks', -1)
return {1, open, redis.call('LLEN', KEYS[4])}
"""

# Take the first n ids of the pool into a new retry chunk, if the pool still starts with
# them. KEYS: job, pool, chunk list, retries hash, new chunk meta, new chunk ids.
# ARGV: n, first id, last id, chunk number, body bytes, now, tag. Returns the attempt or 0.
MAKE_RETRY_CHUNK = """
local n = tonumber(ARGV[1])
local head, tail = redis.call('LINDEX', KEYS[2], 0), redis.call('LINDEX', KEYS[2], n - 1)
if head ~= ARGV[2] or tail ~= ARGV[3] then
  return 0
end
local attempt = 0
for i = 1, n do
  local id = redis.call('LPOP', KEYS[2])
  redis.call('RPUSH', KEYS[6], id)
  local r = redis.call('HINCRBY', KEYS[4], id, 1)
  if r + 1 > attempt then attempt = r + 1 end
end
redis.call('HSET', KEYS[5], 'state', 'pending', 'attempt', attempt, 'count', n, 'bytes', ARGV[5],
  'processed', 0, 'made_at', ARGV[6], 'touched_at', ARGV[6], 'kind', 'retry', 'tag', ARGV[7])
redis.call('RPUSH', KEYS[3], ARGV[4])
redis.call('HINCRBY', KEYS[1], 'open_chunks', 1)
redis.call('HINCRBY', KEYS[1], 'retried', n)
return attempt
"""

# Mark a job completed (or canceled) once nothing remains. KEYS: job, active jobs set (unused,
# kept for the caller's key list), hooks pending, fleet stats, hooks sending. ARGV: now,
# job id, 1 when an on_complete hook must be sent. Returns the final state, '' when already
# final, or 'running' when requests remain. The job stays in the active set until its final
# event is written and its hooks are sent (RELEASE_JOB), so the sweep finishes either.
FINALIZE = """
local st = redis.call('HGET', KEYS[1], 'state')
if st == 'completed' or st == 'canceled' then return '' end
local h = redis.call('HMGET', KEYS[1], 'accepted', 'succeeded', 'failed', 'canceled')
local remaining = tonumber(h[1] or '0') - tonumber(h[2] or '0') - tonumber(h[3] or '0')
  - tonumber(h[4] or '0')
if remaining > 0 then return 'running' end
local final = 'completed'
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then final = 'canceled' end
redis.call('HSET', KEYS[1], 'state', final, 'ended_at', ARGV[1])
redis.call('HINCRBY', KEYS[4], 'jobs:' .. final, 1)
if ARGV[3] == '1' then redis.call('ZADD', KEYS[3], ARGV[1], '!complete') end
return final
"""

# Ask for a job's cancel, atomically against FINALIZE: a job already completed stays
# completed; otherwise it is marked and becomes `canceled` when it finalizes. KEYS: job.
# Returns the state the job was in ('missing' for none).
CANCEL_JOB = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'missing' end
if st == 'completed' or st == 'canceled' then return st end
redis.call('HSET', KEYS[1], 'cancel_requested', '1')
if st ~= 'ingesting' then redis.call('HSET', KEYS[1], 'state', 'canceling') end
return st
"""

# Let a finished job leave the active set once its final event is written and no hook
# waits. KEYS: job, active jobs set, hooks pending, hooks sending. ARGV: job id.
# Returns 1 when it left.
RELEASE_JOB = """
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'completed' and st ~= 'canceled' then return 0 end
if not redis.call('HGET', KEYS[1], 'final_event_id') then return 0 end
if redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[4]) > 0 then return 0 end
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

# Fleet-wide sliding one-minute window. KEYS: calls zset, pause key. ARGV: limit,
# window ms, unique member. Returns 0 when a token was taken, else ms to wait.
ACQUIRE = """
local pause = redis.call('PTTL', KEYS[2])
if pause > 0 then return pause end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now + 1)
"""

# Extend the fleet-wide pause to at least ARGV[1] ms. KEYS: pause key.
PAUSE = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
  return 1
end
return 0
"""

# Admission control: a chunk may be created when it is first in line and its requests fit
# under the cap. KEYS: waiting list, held hash. ARGV: chunk ref, requests, cap.
ADMIT = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 1 end
if not redis.call('LPOS', KEYS[1], ARGV[1]) then redis.call('RPUSH', KEYS[1], ARGV[1]) end
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[1] then return 0 end
local held = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do held = held + tonumber(v) end
if held > 0 and held + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return 0 end
redis.call('LPOP', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

# Put chunks in the admission line, each once (a redelivered submit may enqueue again).
# KEYS: waiting list, held hash. ARGV: chunk refs in order.
ENQUEUE = """
local added = 0
for i = 1, #ARGV do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 and not redis.call('LPOS', KEYS[1], ARGV[i]) then
    redis.call('RPUSH', KEYS[1], ARGV[i])
    added = added + 1
  end
end
return added
"""

# Claim hook marks: a mark moves from pending to sending (stamped now) for exactly one
# caller. KEYS: pending zset, sending zset. ARGV: now, marks... Returns the claimed marks.
CLAIM_HOOKS = """
local claimed = {}
for i = 2, #ARGV do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
    claimed[#claimed + 1] = ARGV[i]
  end
end
return claimed
"""

# Hook marks older than ARGV[1] in either set lost their sender: move the sending ones back
# to pending and return all of them. KEYS: pending zset, sending zset.
STALE_HOOKS = """
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])) do
  redis.call('ZREM', KEYS[2], m)
  redis.call('ZADD', KEYS[1], ARGV[1], m)
  stale[#stale + 1] = m
end
return stale
"""

# Append to a hash field. KEYS: hash. ARGV: field, text.
APPEND_FIELD = """
local v = redis.call('HGET', KEYS[1], ARGV[1]) or ''
redis.call('HSET', KEYS[1], ARGV[1], v .. ARGV[2])
return #v + #ARGV[2]
"""

SOURCES = {
    "claim_job": CLAIM_JOB,
    "begin_create": BEGIN_CREATE,
    "create_unknown": CREATE_UNKNOWN,
    "create_refused": CREATE_REFUSED,
    "look_first": LOOK_FIRST,
    "adopt": ADOPT,
    "split": SPLIT,
    "transition": TRANSITION,
    "finish": FINISH,
    "plan": PLAN,
    "make_retry_chunk": MAKE_RETRY_CHUNK,
    "finalize": FINALIZE,
    "cancel_job": CANCEL_JOB,
    "release_job": RELEASE_JOB,
    "acquire": ACQUIRE,
    "pause": PAUSE,
    "admit": ADMIT,
    "enqueue": ENQUEUE,
    "claim_hooks": CLAIM_HOOKS,
    "stale_hooks": STALE_HOOKS,
    "append_field": APPEND_FIELD,
}


class Scripts:
    """The scripts registered on one Redis client (EVALSHA, reloaded after a restart)."""

    def __init__(self, r: redis.Redis):
        self._scripts = {name: r.register_script(src) for name, src in SOURCES.items()}

    def __getattr__(self, name: str) -> Any:
        try:
            return self._scripts[name]
        except KeyError:
            raise AttributeError(name) from None
