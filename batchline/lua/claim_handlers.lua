
local claimed = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('SISMEMBER', KEYS[1], id) == 0 then
    local held = redis.call('ZSCORE', KEYS[2], id)
    if not held or tonumber(held) < tonumber(ARGV[2]) then
      redis.call('ZADD', KEYS[2], ARGV[1], id)
      claimed[#claimed + 1] = id
    end
  end
end
return claimed
