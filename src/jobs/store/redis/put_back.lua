-- Running -> queued again, when this replica stops (its drain deadline
-- passed) before the backend answered a job that may be sent again, and
-- only while it still holds the job (owner and attempt match): out of this
-- replica's pending entries and queued anew, so another replica takes it
-- at once instead of after the lease. It goes to the back of its urgency's
-- queue: a stream entry cannot be put back where it was. 1 or 0.
-- ARGV: 7 id, 8 consumer, 9 attempt.
local id = ARGV[7]
local job = job_key(id)
local v = redis.call('HMGET', job, 'status', 'owner', 'attempts', 'entry', 'upstream', 'priority')
if v[1] ~= 'running' or v[2] ~= ARGV[8] or v[3] ~= ARGV[9] then return 0 end
local stream = stream_of(v[5], v[6])
redis.call('XACK', stream, GROUP, v[4])
redis.call('XDEL', stream, v[4])
redis.call('HDEL', job, 'owner')
redis.call('HSET', job, 'status', 'queued', 'entry', redis.call('XADD', stream, '*', 'id', id))
publish(id .. ' queued')
wake(v[5])
return 1
