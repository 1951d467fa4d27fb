-- Records a webhook's delivery state on a job that is still kept. While
-- it is pending, its sender holds it until ARGV[8] (Unix ms, the next
-- attempt), and the job is kept until result_ttl after that, so that a
-- replica taking the delivery over finds it; once delivered or failed
-- (ARGV[8] empty) it is let go. ARGV: 7 id, 8 held until, 9.. field/value
-- pairs; an empty value removes the field.
local id, held = ARGV[7], ARGV[8]
local job = job_key(id)
if redis.call('EXISTS', job) == 0 then
  redis.call('ZREM', HOOKS, id)
  return 0
end
for i = 9, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', job, ARGV[i])
  else
    redis.call('HSET', job, ARGV[i], ARGV[i + 1])
  end
end
if held == '' then
  redis.call('ZREM', HOOKS, id)
  return 1
end
hold_hook(id, job, tonumber(held))
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
