
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return '' end
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', t[2])
redis.call('HSET', KEYS[1], 'state', 'creating', 'call', 'live', 'sent_at', now,
  'last_intent_at', now, 'touched_at', now, 'waiting', '', 'ended_at', '', 'verify_step', 0)
if not redis.call('HGET', KEYS[1], 'intent_at') then
  redis.call('HSET', KEYS[1], 'intent_at', now)
end
redis.call('HINCRBY', KEYS[1], 'create_attempts', 1)
return now
