
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], t[1] .. '.' .. string.format('%06d', t[2]))
end
return redis.call('GET', KEYS[2])
