-- DELETE: {'canceled', META}, {'already', META}, {'deleted'},
-- {'gone', binding} or {'missing'}. ARGV: 7 id.
local id = ARGV[7]
local job = job_key(id)
local v = redis.call('HMGET', job, 'status', 'bytes')
if not v[1] then
  local binding = redis.call('GET', gone_key(id))
  if binding then return {'gone', binding} end
  return {'missing'}
end
if v[1] == 'queued' or v[1] == 'running' then
  retire(id, job, 'canceled', {}, RECORD_BYTES)
  return {'canceled', meta(job)}
end
if v[1] == 'canceled' then return {'already', meta(job)} end
-- Finished: its result goes now, its tombstone stays.
redis.call('ZREM', P .. ':charges', id .. ':r:' .. v[2])
charge(-tonumber(v[2]))
redis.call('DEL', job)
return {'deleted'}
