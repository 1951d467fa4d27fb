-- Forgets a job whose id no client was given, leaving no tombstone.
-- ARGV: 7 id.
local id = ARGV[7]
local job = job_key(id)
local v = redis.call('HMGET', job, 'status', 'bytes', 'upstream', 'entry', 'priority')
if not v[1] then return 0 end
unqueue(job)
if v[4] then
  local stream = stream_of(v[3], v[5])
  redis.call('XACK', stream, GROUP, v[4])
  redis.call('XDEL', stream, v[4])
end
local bytes = tonumber(v[2])
if v[1] ~= 'queued' and v[1] ~= 'running' then
  redis.call('ZREM', P .. ':charges', id .. ':r:' .. v[2], id .. ':t:' .. TOMB_BYTES)
  bytes = bytes + TOMB_BYTES
end
charge(-bytes)
redis.call('DEL', job, gone_key(id))
publish('work ' .. v[3])
return 1
