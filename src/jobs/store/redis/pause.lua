-- Pauses (ARGV[8] = '1') or resumes ('0') an upstream by hand, for every
-- replica and until resumed: take and take_over take nothing of a paused
-- upstream. A resume wakes every replica, not only the idle ones: all of
-- them found the upstream paused.
-- ARGV: 7 upstream, 8 paused.
local set = P .. ':paused'
if ARGV[8] == '1' then
  redis.call('SADD', set, ARGV[7])
else
  redis.call('SREM', set, ARGV[7])
  publish('work ' .. ARGV[7])
end
return 1
