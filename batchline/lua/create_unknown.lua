
if redis.call('HGET', KEYS[1], 'state') ~= 'creating' then return '' end
if redis.call('HGET', KEYS[1], 'call') == 'unknown' then
  return redis.call('HGET', KEYS[1], 'ended_at')
end
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', t[2])
redis.call('HSET', KEYS[1], 'call', 'unknown', 'ended_at', now, 'create_error', ARGV[1],
  'touched_at', now)
return now
