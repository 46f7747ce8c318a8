
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 1 end
if not redis.call('LPOS', KEYS[1], ARGV[1]) then redis.call('RPUSH', KEYS[1], ARGV[1]) end
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[1] then return 0 end
local held = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do held = held + tonumber(v) end
if held > 0 and held + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return 0 end
redis.call('LPOP', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
