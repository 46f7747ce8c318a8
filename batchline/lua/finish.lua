
local n = tonumber(ARGV[1])
local fresh = {}
local job_incr = {succeeded = 0, failed = 0, canceled = 0}
local usage = {0, 0, 0, 0, 0}
local failed_by, cost_by = {}, {}
local has_meta = redis.call('EXISTS', KEYS[2]) == 1
for i = 0, n - 1 do
  local b = 3 + i * 10
  local id, outcome = ARGV[b], ARGV[b + 1]
  if redis.call('SADD', KEYS[3], id) == 1 then
    fresh[#fresh + 1] = id
    redis.call('HDEL', KEYS[4], id)
    if outcome == 'retry' then
      redis.call('RPUSH', KEYS[6], id)
      redis.call('HSET', KEYS[8], id, ARGV[b + 2])
    else
      redis.call('HSET', KEYS[5], id, ARGV[b + 2])
      redis.call('HDEL', KEYS[9], id)
      redis.call('HDEL', KEYS[8], id)
      job_incr[outcome] = job_incr[outcome] + 1
      if ARGV[b + 3] == '1' then redis.call('ZADD', KEYS[7], ARGV[2], id) end
      for u = 1, 5 do usage[u] = usage[u] + tonumber(ARGV[b + 3 + u]) end
      -- detail: a failed request's error type, a succeeded one's model (price-table name)
      local detail = ARGV[b + 9]
      if outcome == 'failed' then
        if detail == '' then
          detail = 'unknown_error'
        elseif #detail > 64 or not string.match(detail, '^[%w_]+$') then
          detail = 'other'
        end
        failed_by[detail] = (failed_by[detail] or 0) + 1
      elseif detail ~= '' and #detail <= 64 and string.match(detail, '^[%w_.:-]+$') then
        cost_by[detail] = (cost_by[detail] or 0) + tonumber(ARGV[b + 8])
      end
    end
  end
end
for k, v in pairs(job_incr) do
  if v > 0 then
    redis.call('HINCRBY', KEYS[1], k, v)
    redis.call('HINCRBY', KEYS[10], 'requests:' .. k, v)
  end
end
for t, v in pairs(failed_by) do
  redis.call('HINCRBY', KEYS[1], 'failed:' .. t, v)
  redis.call('HINCRBY', KEYS[10], 'failed:' .. t, v)
end
for m, v in pairs(cost_by) do
  if v > 0 then redis.call('HINCRBY', KEYS[10], 'cost_nusd:' .. m, v) end
end
local names = {'input_tokens', 'output_tokens', 'cache_creation_input_tokens',
               'cache_read_input_tokens', 'cost_nusd'}
for u = 1, 5 do
  if usage[u] > 0 then
    redis.call('HINCRBY', KEYS[1], names[u], usage[u])
    redis.call('HINCRBY', KEYS[10], names[u], usage[u])
  end
end
local processed, count = 0, 0
if has_meta and #fresh > 0 then
  processed = redis.call('HINCRBY', KEYS[2], 'processed', #fresh)
  redis.call('HSET', KEYS[2], 'progress_at', ARGV[2])
else
  processed = tonumber(redis.call('HGET', KEYS[2], 'processed') or '0')
end
count = tonumber(redis.call('HGET', KEYS[2], 'count') or '0')
local h = redis.call('HMGET', KEYS[1], 'accepted', 'succeeded', 'failed', 'canceled')
local remaining = tonumber(h[1] or '0') - tonumber(h[2] or '0') - tonumber(h[3] or '0')
  - tonumber(h[4] or '0')
local out = {processed, count, remaining}
for _, id in ipairs(fresh) do out[#out + 1] = id end
return out
