
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function arm(key, id, ttl)
  if redis.call('SET', key, id, 'NX', 'PX', ttl) then return id end
  return false
end
