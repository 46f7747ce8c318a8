
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
