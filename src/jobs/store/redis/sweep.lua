-- Gives back the charges whose time has come: expired results, tombstones
-- and claims. ARGV: 7 how many at most.
local due = redis.call('ZRANGEBYSCORE', P .. ':charges', '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[7]))
if #due == 0 then return 0 end
local total = 0
for _, member in ipairs(due) do
  total = total + tonumber(string.match(member, ':(%d+)$'))
end
redis.call('ZREM', P .. ':charges', unpack(due))
charge(-total)
return #due
