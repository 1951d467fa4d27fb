-- Running -> terminal, only under this replica's lease (the fencing
-- check): the job's META, or nil when the lease is lost.
-- ARGV: 7 id, 8 consumer, 9 attempt, 10 status, 11 bytes, 12.. fields.
local id = ARGV[7]
local job = job_key(id)
local v = redis.call('HMGET', job, 'status', 'owner', 'attempts')
if v[1] ~= 'running' or v[2] ~= ARGV[8] or v[3] ~= ARGV[9] then return false end
retire(id, job, ARGV[10], {unpack(ARGV, 12)}, tonumber(ARGV[11]))
return meta(job)
