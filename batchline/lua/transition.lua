
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return 'missing' end
local ok = false
for s in string.gmatch(ARGV[1], '[^,]+') do
  if s == cur then ok = true end
end
if not ok then return cur end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
if #ARGV > 3 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 4))
end
if ARGV[3] == '1' then
  redis.call('HINCRBY', KEYS[2], 'open_chunks', -1)
end
return 1
