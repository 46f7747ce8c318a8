
local st = redis.call('HGET', KEYS[1], 'state')
if st then
  return {st, redis.call('HGET', KEYS[1], 'fingerprint') or ''}
end
redis.call('HSET', KEYS[1], 'state', 'ingesting', 'fingerprint', ARGV[1], 'created_at', ARGV[2])
return {'new', ARGV[1]}
