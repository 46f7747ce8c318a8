
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', t[2])
redis.call('HSET', KEYS[1], 'state', 'creating', 'call', 'unknown', 'sent_at', ARGV[1],
  'ended_at', ARGV[2], 'lost_check_at', now, 'touched_at', now,
  'create_error', 'Redis came back older than the API: looking before creating')
return 1
