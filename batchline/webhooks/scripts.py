"""The Lua scripts behind webhook delivery state: each change to a lane is one script."""

from __future__ import annotations

_LIB = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function arm(key, id, ttl)
  if redis.call('SET', key, id, 'NX', 'PX', ttl) then return id end
  return false
end
"""

# KEYS: delivery, lane, due, endpoints, chain
# ARGV: event id, event JSON, url, kind, job id, endpoint id, lane ref, lease s, ttl s,
#       endpoint JSON, chain id, chain ttl ms, event type
ENQUEUE = (
    _LIB
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, false} end
local t = now()
redis.call('HSET', KEYS[1], 'event_id', ARGV[1], 'event', ARGV[2], 'url', ARGV[3],
  'kind', ARGV[4], 'job_id', ARGV[5], 'endpoint', ARGV[6], 'type', ARGV[13],
  'state', 'queued', 'attempts', 0, 'failures', 0, 'created_at', t)
redis.call('EXPIRE', KEYS[1], ARGV[9])
redis.call('HSET', KEYS[4], ARGV[6], ARGV[10])
local n = redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[9])
if n > 1 then return {1, false} end
redis.call('ZADD', KEYS[3], t + tonumber(ARGV[8]), ARGV[7])
return {2, arm(KEYS[5], ARGV[11], ARGV[12])}
"""
)

# KEYS: delivery, lane, due, chain
# ARGV: event id, claim token, lease s, lane ref, chain id, chain ttl ms
CLAIM = (
    _LIB
    + """
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[1] then return {'stale'} end
local t = now()
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('LPOP', KEYS[2])
  local nxt = redis.call('LINDEX', KEYS[2], 0)
  if not nxt then redis.call('ZREM', KEYS[3], ARGV[4]); return {'missing'} end
  redis.call('ZADD', KEYS[3], t + tonumber(ARGV[3]), ARGV[4])
  return {'missing', nxt, arm(KEYS[4], ARGV[5], ARGV[6])}
end
local state = redis.call('HGET', KEYS[1], 'state') or ''

if state == 'delivering' and tonumber(redis.call('HGET', KEYS[1], 'claimed_until')) > t then
  return {'busy'}
end
if state == 'waiting' and tonumber(redis.call('HGET', KEYS[1], 'next_at')) > t then
  return {'early'}
end
local lease_until = t + tonumber(ARGV[3])
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'delivering', 'claim', ARGV[2],
  'claimed_until', lease_until, 'started_at', t)
redis.call('ZADD', KEYS[3], lease_until, ARGV[4])
local armed = arm(KEYS[4], ARGV[5], ARGV[6])
local f = redis.call('HMGET', KEYS[1], 'failures', 'event', 'url', 'kind', 'body')
return {'claimed', attempt, f[1], f[2], f[3], f[4], f[5] or false, armed, state}
"""
)

# KEYS: delivery, lane, due, dead, log, chain
# ARGV: event id, claim token, outcome (ok|retry|dead), wait s, log entry JSON, lane ref,
#       delivery ref, lease s, log max, ttl s, chain id, chain ttl ms, status, error
FINISH = (
    _LIB
    + """
local t = now()
redis.call('LPUSH', KEYS[5], ARGV[5])
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[9]) - 1)
redis.call('EXPIRE', KEYS[5], ARGV[10])
local head = redis.call('LINDEX', KEYS[2], 0) == ARGV[1]
local mine = redis.call('HGET', KEYS[1], 'claim') == ARGV[2]
if not head or (not mine and ARGV[3] ~= 'ok') then return {'ignored'} end
redis.call('HSET', KEYS[1], 'last_status', ARGV[13], 'last_error', ARGV[14],
  'last_at', t, 'claim', '')
redis.call('EXPIRE', KEYS[1], ARGV[10])
redis.call('EXPIRE', KEYS[2], ARGV[10])
if ARGV[3] == 'retry' then
  local at = t + tonumber(ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'failures', 1)
  redis.call('HSET', KEYS[1], 'state', 'waiting', 'next_at', at)
  redis.call('ZADD', KEYS[3], at, ARGV[6])
  return {'retry', false, arm(KEYS[6], ARGV[11], ARGV[12])}
end
if ARGV[3] == 'dead' then
  redis.call('HINCRBY', KEYS[1], 'failures', 1)
  redis.call('HSET', KEYS[1], 'state', 'dead', 'dead_at', t)
  redis.call('ZADD', KEYS[4], t, ARGV[7])
else
  redis.call('HSET', KEYS[1], 'state', 'delivered', 'delivered_at', t)
end
redis.call('LPOP', KEYS[2])
local nxt = redis.call('LINDEX', KEYS[2], 0)
if not nxt then
  redis.call('ZREM', KEYS[3], ARGV[6])
  return {ARGV[3], false, false}
end
redis.call('ZADD', KEYS[3], t + tonumber(ARGV[8]), ARGV[6])
return {ARGV[3], nxt, arm(KEYS[6], ARGV[11], ARGV[12])}
"""
)

# KEYS: due, chain
# ARGV: chain id ('' for a one-off run), lease s, limit, lane key prefix, new chain id,
#       chain ttl ms, force ('1': the new chain replaces whatever chain there was)
TICK = (
    _LIB
    + """
local cur = redis.call('GET', KEYS[2])
if ARGV[1] ~= '' and cur ~= ARGV[1] then return {'superseded', false, false} end
local t = now()
local due = redis.call('ZRANGE', KEYS[1], '-inf', t, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, ref in ipairs(due) do
  local head = redis.call('LINDEX', ARGV[4] .. ref, 0)
  if head then
    redis.call('ZADD', KEYS[1], t + tonumber(ARGV[2]), ref)
    table.insert(out, ref)
    table.insert(out, head)
  else
    redis.call('ZREM', KEYS[1], ref)
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = false
if first[2] then wait = tostring(math.max(0, tonumber(first[2]) - t)) end
local chain = false
if ARGV[1] ~= '' then
  if wait then
    redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[6])
    chain = ARGV[1]
  else
    redis.call('DEL', KEYS[2])
  end
elseif ARGV[7] == '1' then
  redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[6])
  chain = ARGV[5]
elseif wait then
  chain = arm(KEYS[2], ARGV[5], ARGV[6])
end
local reply = {'ok', wait, chain}
for _, v in ipairs(out) do table.insert(reply, v) end
return reply
"""
)

# KEYS: delivery, lane, due, dead, chain
# ARGV: event id, delivery ref, lane ref, lease s, ttl s, chain id, chain ttl ms
REPLAY = (
    _LIB
    + """
if not redis.call('ZSCORE', KEYS[4], ARGV[2]) then return {0, false} end
redis.call('ZREM', KEYS[4], ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, false} end
local t = now()
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempts', 0, 'failures', 0, 'claim', '',
  'replayed_at', t)
redis.call('HINCRBY', KEYS[1], 'replays', 1)
redis.call('EXPIRE', KEYS[1], ARGV[5])
local n = redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[5])
if n > 1 then return {1, false} end
redis.call('ZADD', KEYS[3], t + tonumber(ARGV[4]), ARGV[3])
return {2, arm(KEYS[5], ARGV[6], ARGV[7])}
"""
)
