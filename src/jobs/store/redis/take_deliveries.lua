-- Takes over deliveries of one channel whose sender let them go longer
-- than ARGV[10] (ms) ago, at most ARGV[11]: each is held here from now,
-- and returned as {id, META} for its job. Deliveries whose job is gone, or
-- that ended meanwhile, are dropped. ARGV: 7 the channel's set (`hooks`,
-- `kafka`), 8 its fields' prefix, 9 a field that must be '1' for it to be
-- due ('' if none), 10 idle, 11 count.
local set, prefix, needed = P .. ':' .. ARGV[7], ARGV[8], ARGV[9]
local out = {}
local due = redis.call('ZRANGEBYSCORE', set, '-inf', NOW - tonumber(ARGV[10]),
  'LIMIT', 0, tonumber(ARGV[11]))
for _, id in ipairs(due) do
  local job = job_key(id)
  local v = redis.call('HMGET', job, 'status', prefix .. '_state')
  local ended = v[1] and v[1] ~= 'queued' and v[1] ~= 'running'
  -- No state yet: the sender died before its first attempt was recorded.
  local pending = not v[2] or v[2] == 'pending'
  local wanted = needed == '' or redis.call('HGET', job, needed) == '1'
  if ended and pending and wanted then
    hold(ARGV[7], id, NOW)
    table.insert(out, {id, meta(job)})
  else
    redis.call('ZREM', set, id)
  end
end
return out
