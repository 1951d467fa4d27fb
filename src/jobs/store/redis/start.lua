-- Queued -> running under this replica's lease; the attempt number, or nil.
-- ARGV: 7 id, 8 consumer.
local job = job_key(ARGV[7])
if redis.call('HGET', job, 'status') ~= 'queued' then return false end
return start(ARGV[7], job, ARGV[8])
