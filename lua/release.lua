--[[ release.lua: the request failed before any cost; free the reservation's hold.

KEYS[1]  reservation record   <prefix>:{P}:r:<handle>
The user's hash <base>u:<user> and holds zset <base>h:<user> are named from the record (same {P} tag).

ARGV[1]  key base "<prefix>:{P}:"
ARGV[2]  handle
ARGV[3]  idempotency TTL, ms

Returns
  {1, released}   released = 1 when money was still held and is now free, 0 when the hold had expired;
                  a retry returns the first answer
  {0, "NO_SUCH_RESERVATION"}   unknown or forgotten handle
  {0, "COMMITTED"}             already committed: the spend stands, nothing changes
]]

local rec = redis.call('HMGET', KEYS[1], 'user', 'amount', 'state', 'released')
local user, amount, state = rec[1], rec[2], rec[3]
if not user then return {0, 'NO_SUCH_RESERVATION'} end
if state == 'committed' then return {0, 'COMMITTED'} end
if state == 'released' then return {1, tonumber(rec[4])} end

local released = 0
if redis.call('ZREM', ARGV[1] .. 'h:' .. user, ARGV[2] .. '|' .. amount) == 1 then
  redis.call('HINCRBY', ARGV[1] .. 'u:' .. user, 'held', string.format('%d', -tonumber(amount)))
  released = 1
end
redis.call('HSET', KEYS[1], 'state', 'released', 'released', released)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, released}
