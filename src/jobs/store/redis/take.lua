-- Takes the oldest waiting job of an upstream for this replica, unless
-- `max` of its jobs are taken already (pending, across all replicas):
-- {id, route, method, path, headers, body}, or nil.
-- ARGV: 7 upstream, 8 consumer, 9 max.
local stream = work_key(ARGV[7])
if redis.call('EXISTS', stream) == 0 then return false end
if redis.call('XPENDING', stream, GROUP)[1] >= tonumber(ARGV[9]) then return false end
for _ = 1, 16 do
  local read = redis.call('XREADGROUP', 'GROUP', GROUP, ARGV[8], 'COUNT', 1, 'STREAMS', stream, '>')
  if not read then return false end
  local entry = read[1][2][1]
  local id = entry[2][2]
  local v = redis.call('HMGET', job_key(id), 'status', 'route', 'method', 'req_path', 'req_headers', 'req_body')
  if v[1] == 'queued' then return {id, v[2], v[3], v[4], v[5], v[6]} end
  -- Discarded while it waited: out of the queue.
  redis.call('XACK', stream, GROUP, entry[1])
  redis.call('XDEL', stream, entry[1])
end
return false
