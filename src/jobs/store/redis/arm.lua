-- The job's webhook is to be sent when it ends: 1 if it has ended already
-- (the caller sends it), else 0. ARGV: 7 id.
local job = job_key(ARGV[7])
local status = redis.call('HGET', job, 'status')
if not status then return 0 end
redis.call('HSET', job, 'hook_armed', '1')
if status == 'queued' or status == 'running' then return 0 end
hold('hooks', ARGV[7], NOW)
return 1
