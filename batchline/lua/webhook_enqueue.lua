
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
