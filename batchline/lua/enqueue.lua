
local added = 0
for i = 1, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then
    if not redis.call('LPOS', KEYS[1], ARGV[i]) then
      redis.call('RPUSH', KEYS[1], ARGV[i])
      added = added + 1
    end
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  end
end
return added
