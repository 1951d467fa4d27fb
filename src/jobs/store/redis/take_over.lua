-- Takes over jobs of an upstream whose replica let their lease run out,
-- unless the upstream is held.
-- A queued one, or a running one that may be sent again, is started anew
-- here and returned ({id, route, method, path, headers, body, attempt});
-- a running one that may not is failed as lost. Consumers of replicas
-- gone are forgotten.
-- ARGV: 7 upstream, 8 consumer, 9 lease (ms), 10 count.
-- Held (its backend asked to be left alone) or paused by hand: what its
-- replicas let go of waits too, and is taken over after.
if tonumber(redis.call('GET', P .. ':hold:' .. ARGV[7]) or '0') > NOW then return {} end
if redis.call('SISMEMBER', P .. ':paused', ARGV[7]) == 1 then return {} end
local out = {}
for _, stream in ipairs(work_keys(ARGV[7])) do
  local left = tonumber(ARGV[10]) - #out
  if left <= 0 then break end
  local claimed = redis.call('XAUTOCLAIM', stream, GROUP, ARGV[8], ARGV[9], '0-0', 'COUNT', left)
  for _, entry in ipairs(claimed[2]) do
    local id = entry[2] and entry[2][2]
    local job = id and job_key(id)
    local v = job and redis.call('HMGET', job, 'status', 'resend', 'route', 'method', 'req_path', 'req_headers', 'req_body', 'created')
    if v and (v[1] == 'queued' or (v[1] == 'running' and v[2] == '1')) then
      table.insert(out, {id, v[3], v[4], v[5], v[6], v[7], start(id, job, ARGV[8]), v[8] or ''})
    elseif v and v[1] == 'running' then
      retire(id, job, 'failed', {'failure', 'lost'}, RECORD_BYTES)
    else
      redis.call('XACK', stream, GROUP, entry[1])
      redis.call('XDEL', stream, entry[1])
    end
  end
  -- Every replica start adds a consumer to the group; those that hold
  -- nothing and have been silent longer than a lease are replicas gone (a
  -- live one renews, reads or claims more often), and a live one deleted
  -- by mistake comes back on its next read, having held nothing.
  for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', stream, GROUP)) do
    local c = {}
    for i = 1, #info, 2 do c[info[i]] = info[i + 1] end
    if c['pending'] == 0 and c['idle'] > tonumber(ARGV[9]) and c['name'] ~= ARGV[8] then
      redis.call('XGROUP', 'DELCONSUMER', stream, GROUP, c['name'])
    end
  end
end
return out
