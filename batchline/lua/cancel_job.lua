
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'missing' end
if st == 'completed' or st == 'canceled' then return st end
redis.call('HSET', KEYS[1], 'cancel_requested', '1')
if st ~= 'ingesting' then redis.call('HSET', KEYS[1], 'state', 'canceling') end
return st
