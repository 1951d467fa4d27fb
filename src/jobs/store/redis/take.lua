-- Takes up to `count` of the oldest waiting jobs of an upstream for this
-- replica, never more than leave `max` of its jobs taken (pending, across
-- all replicas), and starts them: {held, jobs}, each job {id, route,
-- method, path, headers, body, attempt}. Starting here saves each job a
-- round trip. While the upstream is paused by hand nothing is taken and
-- `held` is -1; while it is held (its backend asked to be left alone)
-- nothing is taken and `held` says until when (Unix ms); else it is 0.
-- A replica that takes nothing otherwise is noted as idle, to be woken by
-- the next job queued or place freed.
-- ARGV: 7 upstream, 8 consumer, 9 max, 10 count.
if redis.call('SISMEMBER', P .. ':paused', ARGV[7]) == 1 then return {-1, {}} end
local held = tonumber(redis.call('GET', P .. ':hold:' .. ARGV[7]) or '0')
if held > NOW then return {held, {}} end
local stream = work_key(ARGV[7])
if redis.call('EXISTS', stream) == 0 then
  redis.call('SADD', idle_key(ARGV[7]), ARGV[8])
  return {0, {}}
end
local room = tonumber(ARGV[9]) - redis.call('XPENDING', stream, GROUP)[1]
local want = math.min(room, tonumber(ARGV[10]))
local out = {}
while #out < want do
  local read = redis.call('XREADGROUP', 'GROUP', GROUP, ARGV[8], 'COUNT', want - #out, 'STREAMS', stream, '>')
  if not read then break end
  for _, entry in ipairs(read[1][2]) do
    local id = entry[2][2]
    local job = job_key(id)
    local v = redis.call('HMGET', job, 'status', 'route', 'method', 'req_path', 'req_headers', 'req_body', 'start_by')
    if v[1] == 'queued' and v[7] and tonumber(v[7]) <= NOW then
      -- Waited past its route's start_timeout: failed, never sent.
      retire(id, job, 'failed', {'failure', 'expired'}, RECORD_BYTES)
    elseif v[1] == 'queued' then
      table.insert(out, {id, v[2], v[3], v[4], v[5], v[6], start(id, job, ARGV[8])})
    else
      -- Discarded while it waited: out of the queue.
      redis.call('XACK', stream, GROUP, entry[1])
      redis.call('XDEL', stream, entry[1])
    end
  end
end
if #out == 0 then redis.call('SADD', idle_key(ARGV[7]), ARGV[8]) end
return {0, out}
