
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
