-- Renews a running job's lease if this replica still holds it (owner and
-- attempt match): its queue entry's idle time starts again. 1 or 0.
-- ARGV: 7 id, 8 consumer, 9 attempt.
local v = redis.call('HMGET', job_key(ARGV[7]), 'status', 'owner', 'attempts', 'entry', 'upstream', 'priority')
if v[1] ~= 'running' or v[2] ~= ARGV[8] or v[3] ~= ARGV[9] then return 0 end
redis.call('XCLAIM', stream_of(v[5], v[6]), GROUP, ARGV[8], 0, v[4], 'JUSTID')
return 1
