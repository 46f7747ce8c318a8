
local ref, n, cap = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('HEXISTS', KEYS[2], ref) == 1 then return {1} end
if not redis.call('LPOS', KEYS[1], ref) then redis.call('RPUSH', KEYS[1], ref) end
redis.call('HSET', KEYS[3], ref, n)
local total = held_total()
-- Every chunk ahead in line must fit too (counted as if it were at the API already).
local pos = redis.call('LPOS', KEYS[1], ref)
local start = 0
while start < pos do
  local last = math.min(pos - 1, start + 199)
  local refs = redis.call('LRANGE', KEYS[1], start, last)
  local sizes = redis.call('HMGET', KEYS[3], unpack(refs))
  for i = 1, #refs do
    local size = tonumber(sizes[i])
    if not size or not fits(total, size, cap) then
      redis.call('SADD', KEYS[4], ref)
      return {0}
    end
    total = total + size
  end
  start = last + 1
end
if not fits(total, n, cap) then
  redis.call('SADD', KEYS[4], ref)
  return {0}
end
redis.call('LREM', KEYS[1], 1, ref)
redis.call('HDEL', KEYS[3], ref)
redis.call('SREM', KEYS[4], ref)
redis.call('HSET', KEYS[2], ref, n)
-- Parked chunks right behind it that fit as well go now, not at their next try.
local out = {1}
for _, woken in ipairs(wake(pos, total + n, cap)) do out[#out + 1] = woken end
return out
