
if KEYS[5] and redis.call('HGET', KEYS[5], 'final_event_id') then
  return {false, 0}
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[5]) then
  return {false, 0}
end
if KEYS[5] then redis.call('HSET', KEYS[5], 'final_event_id', ARGV[7]) end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minid = string.format('%d-0', now_ms - tonumber(ARGV[2]))
pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], ARGV[4], '$', 'MKSTREAM')
local id = redis.call('XADD', KEYS[1], 'MINID', '~', minid, '*', 'event', ARGV[1])
redis.call('XADD', KEYS[2], 'MINID', '~', minid, '*', 'event', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local nudge = 0
if redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[6]) then nudge = 1 end
return {id, nudge}
