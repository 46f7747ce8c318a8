
local cur = redis.call('GET', KEYS[2])
if ARGV[1] ~= '' and cur ~= ARGV[1] then return {'superseded', false, false} end
local t = now()
local due = redis.call('ZRANGE', KEYS[1], '-inf', t, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, ref in ipairs(due) do
  local head = redis.call('LINDEX', ARGV[4] .. ref, 0)
  if head then
    redis.call('ZADD', KEYS[1], t + tonumber(ARGV[2]), ref)
    table.insert(out, ref)
    table.insert(out, head)
  else
    redis.call('ZREM', KEYS[1], ref)
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = false
if first[2] then wait = tostring(math.max(0, tonumber(first[2]) - t)) end
local chain = false
if ARGV[1] ~= '' then
  if wait then
    redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[6])
    chain = ARGV[1]
  else
    redis.call('DEL', KEYS[2])
  end
elseif ARGV[7] == '1' then
  redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[6])
  chain = ARGV[5]
elseif wait then
  chain = arm(KEYS[2], ARGV[5], ARGV[6])
end
local reply = {'ok', wait, chain}
for _, v in ipairs(out) do table.insert(reply, v) end
return reply
