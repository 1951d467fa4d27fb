-- Queued -> running under this replica's lease; the attempt number, or nil.
-- ARGV: 7 id, 8 consumer.
local job = job_key(ARGV[7])
if redis.call('HGET', job, 'status') ~= 'queued' then return false end
local attempt = redis.call('HINCRBY', job, 'attempts', 1)
redis.call('HSET', job, 'status', 'running', 'owner', ARGV[8], 'started', NOW)
publish(ARGV[7] .. ' running')
return attempt
