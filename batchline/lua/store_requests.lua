
-- Store each request of an ingest flush once: its api custom_id claims the slot (a repeat is
-- refused), and a mapped id keeps the user's own. ARGV: (api_id, blob, custom_id or '')
-- triples. Returns 1 per request stored, 0 per repeat, in order.
local created = {}
for i = 1, #ARGV, 3 do
  created[#created + 1] = redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  if ARGV[i + 2] ~= '' then redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2]) end
end
return created
