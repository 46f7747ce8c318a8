-- Admission control, shared by its scripts. KEYS[1]: the line (chunk refs waiting for room, in
-- order); KEYS[2]: held (ref -> requests at the API); KEYS[3]: sizes (ref -> requests, for the
-- chunks in line); KEYS[4]: parked (refs whose create found no room and waits to be sent again).

local function held_total()
  local held = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[2])) do held = held + tonumber(v) end
  return held
end

-- A chunk fits on top of `total` requests under the cap; with nothing ahead, even a chunk
-- larger than the cap goes (alone).
local function fits(total, size, cap)
  return total == 0 or total + size <= cap
end

-- The parked chunks from position `start` of the line on that fit, in order, on top of `total`
-- requests: taken off the parked set and returned, for their creates to be sent now. Stops at
-- the first chunk that does not fit (or whose size is unknown): order is kept.
local function wake(start, total, cap)
  local woken = {}
  local left = redis.call('SCARD', KEYS[4])
  while left > 0 do
    local refs = redis.call('LRANGE', KEYS[1], start, start + 199)
    if #refs == 0 then break end
    local sizes = redis.call('HMGET', KEYS[3], unpack(refs))
    for i = 1, #refs do
      local size = tonumber(sizes[i])
      if not size or not fits(total, size, cap) then return woken end
      total = total + size
      if redis.call('SREM', KEYS[4], refs[i]) == 1 then
        woken[#woken + 1] = refs[i]
        left = left - 1
        if left == 0 then return woken end
      end
    end
    start = start + #refs
  end
  return woken
end
