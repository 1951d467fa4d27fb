-- Takes over webhook deliveries whose sender let them go longer than
-- ARGV[7] (ms) ago, at most ARGV[8]: each is held here from now, and
-- returned as {id, META} for its job. Deliveries whose job is gone, or that
-- ended meanwhile, are dropped.
local out = {}
local due = redis.call('ZRANGEBYSCORE', HOOKS, '-inf', NOW - tonumber(ARGV[7]),
  'LIMIT', 0, tonumber(ARGV[8]))
for _, id in ipairs(due) do
  local job = job_key(id)
  local v = redis.call('HMGET', job, 'status', 'hook_armed', 'hook_state')
  if v[1] and v[1] ~= 'queued' and v[1] ~= 'running' and v[2] == '1' and v[3] == 'pending' then
    redis.call('ZADD', HOOKS, NOW, id)
    table.insert(out, {id, meta(job)})
  else
    redis.call('ZREM', HOOKS, id)
  end
end
return out
