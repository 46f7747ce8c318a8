
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'completed' and st ~= 'canceled' then return 0 end
if not redis.call('HGET', KEYS[1], 'final_event_id') then return 0 end
if redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[4]) > 0 then return 0 end
redis.call('SREM', KEYS[2], ARGV[1])
return 1
