-- Records a webhook's delivery state on a job that is still kept.
-- ARGV: 7 id, 8.. field/value pairs; an empty value removes the field.
local job = job_key(ARGV[7])
if redis.call('EXISTS', job) == 0 then return 0 end
for i = 8, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', job, ARGV[i])
  else
    redis.call('HSET', job, ARGV[i], ARGV[i + 1])
  end
end
return 1
