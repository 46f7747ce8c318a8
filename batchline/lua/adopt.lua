
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[2] and string.sub(owner, 1, 4) ~= 'dup:' then return owner end
local cur = redis.call('HGET', KEYS[1], 'batch_id')
if cur == ARGV[1] then return 'same' end
if redis.call('HGET', KEYS[1], 'state') == 'creating' and (not cur or cur == '') then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
  redis.call('HSET', KEYS[1], 'state', 'in_progress', 'batch_id', ARGV[1], 'call', '',
    'waiting', '')
  if #ARGV > 3 then redis.call('HSET', KEYS[1], unpack(ARGV, 4)) end
  redis.call('DEL', KEYS[5])
  return 'adopted'
end
redis.call('SET', KEYS[2], 'dup:' .. ARGV[2], 'EX', ARGV[3])
if redis.call('SADD', KEYS[4], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[3], 'duplicates_canceled', 1)
  return 'duplicate'
end
return 'duplicate_known'
