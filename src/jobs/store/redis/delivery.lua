-- Records the state of a delivery of a job that is still kept. While it
-- is pending, its sender holds it until ARGV[9] (Unix ms, the next
-- attempt), and the job is kept until result_ttl after that, so that a
-- replica taking the delivery over finds it; once delivered or failed
-- (ARGV[9] empty) it is let go. ARGV: 7 id, 8 the channel's set (`hooks`,
-- `kafka`), 9 held until, 10.. field/value pairs; an empty value removes
-- the field.
local id, set, held = ARGV[7], ARGV[8], ARGV[9]
local job = job_key(id)
if redis.call('EXISTS', job) == 0 then
  redis.call('ZREM', P .. ':' .. set, id)
  return 0
end
for i = 10, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', job, ARGV[i])
  else
    redis.call('HSET', job, ARGV[i], ARGV[i + 1])
  end
end
if held == '' then
  redis.call('ZREM', P .. ':' .. set, id)
  return 1
end
hold(set, id, tonumber(held))
local keep = tonumber(held) + RESULT_TTL
local ttl = redis.call('PTTL', job)
if ttl >= 0 and NOW + ttl < keep then
  -- Kept longer: the charges for its result and tombstone move with it.
  local bytes = redis.call('HGET', job, 'bytes')
  redis.call('PEXPIREAT', job, keep)
  redis.call('PEXPIREAT', gone_key(id), keep + TOMB_TTL)
  redis.call('ZADD', P .. ':charges', 'XX', keep, id .. ':r:' .. bytes)
  redis.call('ZADD', P .. ':charges', 'XX', keep + TOMB_TTL, id .. ':t:' .. TOMB_BYTES)
end
return 1
