-- Records a queued job, claims its idempotency scope and queues it, or
-- refuses: {'ok'}, {'taken', holder}, {'full'}, {'queue-full'} or
-- {'quota'} (its caller has as many jobs waiting on the route as it may).
-- ARGV: 7 id, 8 budget, 9 bytes, 10 upstream, 11 max_queue, 12 scope ('' if
-- none), 13 claim value, 14 replace ('1' or '0'), 15 caller ('' if the
-- route has no quota), 16 the caller's most waiting jobs, 17.. job fields.
local id, budget, bytes = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local upstream, max_queue = ARGV[10], tonumber(ARGV[11])
local scope, claim, replace = ARGV[12], ARGV[13], ARGV[14]
local caller, quota = ARGV[15], tonumber(ARGV[16])
local idem = P .. ':idem:' .. scope
if scope ~= '' and replace ~= '1' then
  local held = redis.call('GET', idem)
  if held then return {'taken', held} end
end
local claim_bytes = 0
if scope ~= '' then claim_bytes = TOMB_BYTES end
if tonumber(redis.call('GET', P .. ':bytes') or '0') + bytes + claim_bytes > budget then
  return {'full'}
end
local _, waiting = counts(upstream)
if waiting >= max_queue then return {'queue-full'} end
if caller ~= '' and tonumber(redis.call('GET', quota_key(caller)) or '0') >= quota then
  return {'quota'}
end
local job = job_key(id)
redis.call('HSET', job, 'status', 'queued', 'created', NOW, 'attempts', 0, 'bytes', bytes,
  'upstream', upstream, unpack(ARGV, 17))
if caller ~= '' then
  redis.call('INCR', quota_key(caller))
  redis.call('HSET', job, 'caller', caller)
end
local stream = stream_of(upstream, redis.call('HGET', job, 'priority'))
if redis.call('EXISTS', stream) == 0 then
  redis.call('XGROUP', 'CREATE', stream, GROUP, '0', 'MKSTREAM')
end
redis.call('HSET', job, 'entry', redis.call('XADD', stream, '*', 'id', id))
charge(bytes)
if scope ~= '' then
  redis.call('SET', idem, claim, 'PX', RESULT_TTL + TOMB_TTL)
  charge(claim_bytes)
  release_at(NOW + RESULT_TTL + TOMB_TTL, 'i', id, claim_bytes)
end
wake(upstream)
return {'ok'}
