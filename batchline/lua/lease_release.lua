
local holder = redis.call('GET', KEYS[1])
if holder and string.match(holder, '^[^|]*') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
