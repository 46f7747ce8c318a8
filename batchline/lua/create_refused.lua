
if redis.call('HGET', KEYS[1], 'state') ~= 'creating' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'pending', 'call', '')
redis.call('DEL', KEYS[2])
return 1
