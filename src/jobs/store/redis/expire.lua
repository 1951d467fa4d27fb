-- Fails the jobs of an upstream still waiting past their start_by (their
-- route's start_timeout after they were accepted), never sent: among the
-- oldest `count` entries of each urgency's stream that no replica has
-- taken yet. How many it failed.
-- ARGV: 7 upstream, 8 count.
local failed = 0
for _, stream in ipairs(work_keys(ARGV[7])) do
  local last = '0-0'
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = {}
    for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
    if info['name'] == GROUP then last = info['last-delivered-id'] end
  end
  for _, entry in ipairs(redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', ARGV[8])) do
    local id = entry[2][2]
    local job = job_key(id)
    local v = redis.call('HMGET', job, 'status', 'start_by')
    if v[1] == 'queued' and v[2] and tonumber(v[2]) <= NOW then
      retire(id, job, 'failed', {'failure', 'expired'}, RECORD_BYTES)
      failed = failed + 1
    end
  end
end
return failed
