
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
