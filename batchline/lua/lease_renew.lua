
if ARGV[4] == '1' and KEYS[2] and redis.call('HGET', KEYS[2], 'state') == 'stopping' then
  return 0
end
local holder = redis.call('GET', KEYS[1])
if holder and string.match(holder, '^[^|]*') ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
