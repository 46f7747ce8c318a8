
local function open_chunks() return tonumber(redis.call('HGET', KEYS[3], 'open_chunks') or '0') end
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'ended' then
  return {0, open_chunks(), redis.call('LLEN', KEYS[4])}
end
local processed = tonumber(redis.call('HGET', KEYS[1], 'processed') or '0')
local count = tonumber(redis.call('HGET', KEYS[1], 'count') or '0')
if processed < count then
  return {-1, open_chunks(), redis.call('LLEN', KEYS[4])}
end
while true do
  local id = redis.call('LMOVE', KEYS[2], KEYS[4], 'LEFT', 'RIGHT')
  if not id then break end
end
redis.call('HSET', KEYS[1], 'state', 'done', 'touched_at', ARGV[1], 'done_at', ARGV[1])
local open = redis.call('HINCRBY', KEYS[3], 'open_chunks', -1)
return {1, open, redis.call('LLEN', KEYS[4])}
