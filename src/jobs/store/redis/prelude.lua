-- Shared by every script. KEYS[1] is the prefix of every key it touches
-- (on a cluster, under one hash tag). Common arguments: ARGV[1] the
-- gateway's key prefix, which names the events channel, ARGV[2]
-- now (Unix ms), ARGV[3] result_ttl (ms), ARGV[4] tombstone_ttl (ms),
-- ARGV[5] bytes a tombstone or claim is charged, ARGV[6] bytes a job's
-- record is charged. Each script's own arguments start at ARGV[7]. The
-- Rust side puts `local META = {...}` (the job fields a lookup reads) first.
local P = KEYS[1]
local CHANNEL = ARGV[1] .. ':events'
local NOW = tonumber(ARGV[2])
local RESULT_TTL = tonumber(ARGV[3])
local TOMB_TTL = tonumber(ARGV[4])
local TOMB_BYTES = tonumber(ARGV[5])
local RECORD_BYTES = tonumber(ARGV[6])
local GROUP = 'workers'

local function job_key(id) return P .. ':job:' .. id end
local function gone_key(id) return P .. ':gone:' .. id end
-- An upstream's queue is one stream per urgency (RFC 9218's u=0 to 7),
-- read most urgent first. The default urgency's stream keeps the name the
-- one stream had before urgencies, so what an older build queued is read.
local DEFAULT_URGENCY = 3
local function work_key(upstream, urgency)
  if urgency == DEFAULT_URGENCY then return P .. ':work:' .. upstream end
  return P .. ':work:' .. upstream .. ':u' .. urgency
end
-- The upstream's streams that exist, most urgent first.
local function work_keys(upstream)
  local keys = {}
  for urgency = 0, 7 do
    local key = work_key(upstream, urgency)
    if redis.call('EXISTS', key) == 1 then keys[#keys + 1] = key end
  end
  return keys
end
-- The stream a job is queued in: its upstream's, of its urgency.
local function stream_of(upstream, priority)
  return work_key(upstream, tonumber(priority or DEFAULT_URGENCY))
end
-- How many of an upstream's jobs replicas hold (pending), and how many
-- wait to be taken.
local function counts(upstream)
  local pending, waiting = 0, 0
  for _, stream in ipairs(work_keys(upstream)) do
    local held = redis.call('XPENDING', stream, GROUP)[1]
    pending = pending + held
    waiting = waiting + redis.call('XLEN', stream) - held
  end
  return pending, waiting
end
local function idle_key(upstream) return P .. ':idle:' .. upstream end
local function publish(message) redis.call('PUBLISH', CHANNEL, message) end
local function charge(bytes) redis.call('INCRBY', P .. ':bytes', bytes) end

-- A charge to give back at `at`; the member names its bytes, so the
-- sweeper needs nothing else, and its id and kind, so it can be taken back.
local function release_at(at, kind, id, bytes)
  redis.call('ZADD', P .. ':charges', at, id .. ':' .. kind .. ':' .. bytes)
end

-- Tells the replicas that last found nothing to take from an upstream's
-- queue (see take) that there may be work now, if there are any: under a
-- backlog no replica is idle, and nothing is published.
local function wake(upstream)
  if redis.call('DEL', idle_key(upstream)) == 1 then publish('work ' .. upstream) end
end

local function meta(job) return redis.call('HMGET', job, unpack(META)) end

-- A caller's count of waiting jobs on a route (its max_queued_per_caller).
local function quota_key(caller) return P .. ':quota:' .. caller end

-- The job no longer waits to start (it starts, or ends, or is forgotten):
-- out of its caller's count, once.
local function unqueue(job)
  local caller = redis.call('HGET', job, 'caller')
  if not caller then return end
  redis.call('HDEL', job, 'caller')
  if redis.call('DECR', quota_key(caller)) <= 0 then redis.call('DEL', quota_key(caller)) end
end

-- Queued -> running under `consumer`'s lease: the attempt's number.
local function start(id, job, consumer)
  unqueue(job)
  local attempt = redis.call('HINCRBY', job, 'attempts', 1)
  redis.call('HSET', job, 'status', 'running', 'owner', consumer, 'started', NOW)
  publish(id .. ' running')
  return attempt
end

-- A delivery of an ended job under way, in the set of its channel
-- (`hooks`, `kafka`), is held by the replica making it until `held` (Unix
-- ms); once it has been let go a lease past that, another replica takes it
-- over.
local function hold(set, id, held)
  redis.call('ZADD', P .. ':' .. set, held, id)
end

-- The deliveries due when a job ends: its webhook if it is to be sent,
-- its Kafka record if its route has a topic.
local function hold_deliveries(id, job)
  local v = redis.call('HMGET', job, 'hook_armed', 'kafka_topic')
  if v[1] == '1' then hold('hooks', id, NOW) end
  if v[2] then hold('kafka', id, NOW) end
end

-- Ends a queued or running job: out of its queue (freeing its place), its
-- request dropped, its record and result kept for result_ttl, then its
-- tombstone for tombstone_ttl; everyone told.
local function retire(id, job, status, fields, bytes)
  unqueue(job)
  local v = redis.call('HMGET', job, 'upstream', 'entry', 'bytes', 'priority')
  if v[2] then
    local stream = stream_of(v[1], v[4])
    redis.call('XACK', stream, GROUP, v[2])
    redis.call('XDEL', stream, v[2])
  end
  redis.call('HDEL', job, 'req_path', 'req_headers', 'req_body', 'entry', 'owner')
  redis.call('HSET', job, 'status', status, 'finished', NOW, 'bytes', bytes, unpack(fields))
  charge(bytes - tonumber(v[3]) + TOMB_BYTES)
  release_at(NOW + RESULT_TTL, 'r', id, bytes)
  release_at(NOW + RESULT_TTL + TOMB_TTL, 't', id, TOMB_BYTES)
  redis.call('PEXPIRE', job, RESULT_TTL)
  -- A bound job's tombstone keeps its binding: the credentials' digest,
  -- then the route, so only its owner learns that it is gone.
  local b = redis.call('HMGET', job, 'bound', 'route')
  redis.call('SET', gone_key(id), b[1] and (b[1] .. b[2]) or '', 'PX', RESULT_TTL + TOMB_TTL)
  hold_deliveries(id, job)
  publish(id .. ' ' .. status)
  -- A place is free: the replicas that found none wait for one, if a job
  -- waits for them.
  local _, waiting = counts(v[1])
  if waiting > 0 then wake(v[1]) end
end
