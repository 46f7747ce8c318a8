
local failed = 0
for i = 1, #ARGV, 2 do
  local id, err = ARGV[i], ARGV[i + 1]
  if redis.call('SADD', KEYS[1], id) == 1 then
    redis.call('HINCRBY', KEYS[4], 'handled', 1)
    if err ~= '' then
      redis.call('HSET', KEYS[3], id, err)
      redis.call('HINCRBY', KEYS[4], 'handler_failed', 1)
      failed = failed + 1
    end
  end
  redis.call('ZREM', KEYS[2], id)
end
return failed
