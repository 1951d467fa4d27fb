-- Nothing of an upstream starts, on any replica, before `until` (Unix ms):
-- its backend asked to be left alone (429, 503). A later hold already set
-- stands.
-- ARGV: 7 upstream, 8 until.
local key = P .. ':hold:' .. ARGV[7]
local till = tonumber(ARGV[8])
if till > tonumber(redis.call('GET', key) or '0') then
  redis.call('SET', key, till, 'PXAT', till)
end
return 1
