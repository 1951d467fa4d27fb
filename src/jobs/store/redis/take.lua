-- Takes up to `count` of the waiting jobs of an upstream for this
-- replica, the most urgent first, then the oldest, never more than leave `max` of its jobs taken (pending, across
-- all replicas), and starts them: {held, jobs, paced}, each job {id, route,
-- method, path, headers, body, attempt}. Starting here saves each job a
-- round trip. While the upstream is paused by hand nothing is taken and
-- `held` is -1; while it is held (its backend asked to be left alone)
-- nothing is taken and `held` says until when (Unix ms); else it is 0.
-- A replica that takes nothing otherwise is noted as idle, to be woken by
-- the next job queued or place freed. With a rate, starts are paced by
-- GCRA over all replicas: `P:pace:{upstream}` keeps when the next start
-- would be exactly on time (Unix ms); a start may come `tolerance` ms
-- early (the burst), and moves it on by `interval`. When the rate allows
-- none now, nothing is read and the third value says when it will.
-- ARGV: 7 upstream, 8 consumer, 9 max, 10 count, 11 interval ms (0: no
-- rate), 12 tolerance ms.
if redis.call('SISMEMBER', P .. ':paused', ARGV[7]) == 1 then return {-1, {}, 0} end
local held = tonumber(redis.call('GET', P .. ':hold:' .. ARGV[7]) or '0')
if held > NOW then return {held, {}, 0} end
local streams = work_keys(ARGV[7])
if #streams == 0 then
  redis.call('SADD', idle_key(ARGV[7]), ARGV[8])
  return {0, {}, 0}
end
local pending = counts(ARGV[7])
local want = math.min(tonumber(ARGV[9]) - pending, tonumber(ARGV[10]))
local interval, tolerance = tonumber(ARGV[11]), tonumber(ARGV[12])
local pace = P .. ':pace:' .. ARGV[7]
local on_time = NOW
if interval > 0 and want > 0 then
  on_time = math.max(tonumber(redis.call('GET', pace) or '0'), NOW)
  local allowed = math.floor((NOW + tolerance - on_time) / interval) + 1
  if allowed <= 0 then return {0, {}, math.ceil(on_time - tolerance)} end
  want = math.min(want, allowed)
end
local out = {}
-- Most urgent first; within one urgency, in order.
for _, stream in ipairs(streams) do
  while #out < want do
    local read = redis.call('XREADGROUP', 'GROUP', GROUP, ARGV[8], 'COUNT', want - #out, 'STREAMS', stream, '>')
    if not read then break end
    for _, entry in ipairs(read[1][2]) do
      local id = entry[2][2]
      local job = job_key(id)
      local v = redis.call('HMGET', job, 'status', 'route', 'method', 'req_path', 'req_headers', 'req_body', 'start_by', 'created')
      if v[1] == 'queued' and v[7] and tonumber(v[7]) <= NOW then
        -- Waited past its route's start_timeout: failed, never sent.
        retire(id, job, 'failed', {'failure', 'expired'}, RECORD_BYTES)
      elseif v[1] == 'queued' then
        table.insert(out, {id, v[2], v[3], v[4], v[5], v[6], start(id, job, ARGV[8]), v[8] or ''})
      else
        -- Discarded while it waited: out of the queue.
        redis.call('XACK', stream, GROUP, entry[1])
        redis.call('XDEL', stream, entry[1])
      end
    end
  end
  if #out >= want then break end
end
if #out == 0 then redis.call('SADD', idle_key(ARGV[7]), ARGV[8]) end
if interval > 0 and #out > 0 then
  local next = on_time + #out * interval
  -- Kept while it can still hold a start back.
  redis.call('SET', pace, tostring(next), 'PX', math.ceil(next - NOW) + 1000)
end
return {0, out, 0}
