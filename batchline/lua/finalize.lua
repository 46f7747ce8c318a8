
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
