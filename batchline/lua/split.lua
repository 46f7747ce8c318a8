
if redis.call('HGET', KEYS[1], 'state') ~= 'creating' then return 0 end
local into = {}
for i = 2, #ARGV do into[#into + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], 'state', 'split', 'call', '', 'touched_at', ARGV[1],
  'split_into', table.concat(into, ','))
redis.call('RPUSH', KEYS[2], unpack(into))
redis.call('HINCRBY', KEYS[3], 'open_chunks', #into - 1)
return 1
