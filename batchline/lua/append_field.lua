
local v = redis.call('HGET', KEYS[1], ARGV[1]) or ''
redis.call('HSET', KEYS[1], ARGV[1], v .. ARGV[2])
return #v + #ARGV[2]
