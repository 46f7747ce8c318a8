
local n = tonumber(ARGV[1])
local head, tail = redis.call('LINDEX', KEYS[2], 0), redis.call('LINDEX', KEYS[2], n - 1)
if head ~= ARGV[2] or tail ~= ARGV[3] then
  return 0
end
local attempt, first = 0, 0
for i = 1, n do
  local id = redis.call('LPOP', KEYS[2])
  redis.call('RPUSH', KEYS[6], id)
  local r = redis.call('HINCRBY', KEYS[4], id, 1)
  if r == 1 then first = first + 1 end
  if r + 1 > attempt then attempt = r + 1 end
end
redis.call('HSET', KEYS[5], 'state', 'pending', 'attempt', attempt, 'count', n, 'bytes', ARGV[5],
  'processed', 0, 'made_at', ARGV[6], 'touched_at', ARGV[6], 'kind', 'retry', 'tag', ARGV[7])
redis.call('RPUSH', KEYS[3], ARGV[4])
redis.call('HINCRBY', KEYS[1], 'open_chunks', 1)
redis.call('HINCRBY', KEYS[1], 'retried', n)
if first > 0 then
  redis.call('HINCRBY', KEYS[1], 'retried_requests', first)
  redis.call('HINCRBY', KEYS[7], 'requests:retried', first)
end
return attempt
