--[[ set_unlock.lua: write a user's unlock state (from Postgres, the truth) into Redis.

A change carries the version of the Postgres row it comes from (updated_at, microseconds); an older
version never overwrites a newer one, so several writers may apply changes in any order.

KEYS[1]  user hash   <prefix>:{P}:u:<user>

ARGV[1]  "1" enabled, "0" disabled, "absent" no unlock record (denied, checked again later)
ARGV[2]  monthly limit, nano-USD, or -1 for unlimited
ARGV[3]  version (integer, higher is newer)
ARGV[4]  for "absent": ms until Postgres is asked again
ARGV[5]  clock offset, ms (0 in production)

Returns 1 when applied, 0 when Redis already holds a newer version.
]]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[5])

local current = tonumber(redis.call('HGET', KEYS[1], 'ver') or '-1')
if tonumber(ARGV[3]) < current then return 0 end
if ARGV[1] == 'absent' then
  redis.call('HSET', KEYS[1], 'enabled', 'absent', 'limit', -1, 'ver', ARGV[3],
    'absent_until', string.format('%d', now + tonumber(ARGV[4])))
else
  redis.call('HSET', KEYS[1], 'enabled', ARGV[1], 'limit', ARGV[2], 'ver', ARGV[3])
  redis.call('HDEL', KEYS[1], 'absent_until')
end
return 1
