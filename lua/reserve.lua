--[[ reserve.lua: check a user's monthly limit and hold an amount, atomically.

Grants only if  committed spend this month + open holds + amount <= limit  (limit -1 = unlimited).
Holds are kept apart from committed spend, each with an expiry; expired holds are swept here
(at most 100 per call) before the check. The month comes from Redis TIME, UTC.

KEYS[1]  user hash            <prefix>:{P}:u:<user>   fields: enabled, limit, ver, absent_until,
                                                      held, spent:<YYYY-MM>, count:<YYYY-MM>, alerted:<YYYY-MM>
KEYS[2]  user holds zset      <prefix>:{P}:h:<user>   member "<handle>|<amount>", score = expiry (ms)
KEYS[3]  reservation record   <prefix>:{P}:r:<handle> hash: user, amount, month, expires, model, pin,
                                                      pout, pver, state, key
KEYS[4]  idempotency key      <prefix>:{P}:rk:<len(user)>:<user>:<key>  (a string: the handle)

ARGV[1]  user id
ARGV[2]  handle: the new reservation's id, "<P>-<random>"
ARGV[3]  amount to hold, nano-USD (integer >= 0)
ARGV[4]  hold TTL, ms
ARGV[5]  record retention after the hold expires, ms (a late commit is still charged within it)
ARGV[6]  idempotency TTL, ms
ARGV[7]  model id, or "" when the amount was given directly
ARGV[8]  price of 1M prompt tokens, nano-USD, or ""
ARGV[9]  price of 1M completion tokens, nano-USD, or ""
ARGV[10] pricing version, or ""
ARGV[11] clock offset, ms (0 in production; tests move the clock to other months)
ARGV[12] "1" when KEYS[4] names a client idempotency key, else "0"

Returns
  {1, handle, amount, spent, held, limit, expires_ms, month, replayed}   granted (replayed = 1 on a retry)
  {0, reason, spent, held, limit, month}    denied; reason "NOT_ENABLED" or "LIMIT_EXCEEDED"
  {-1, "NOT_LOADED"}                        no unlock state in Redis: load it from Postgres, then retry
All amounts are integers of nano-USD; limit -1 means unlimited.
Self-contained, so any Redis client can EVALSHA it as is.
]]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[11])

local function month_of(ms)
  -- Civil date from days since 1970-01-01 (H. Hinnant's algorithm), UTC.
  local z = math.floor(ms / 86400000) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  return string.format('%04d-%02d', y, m)
end
local function int(n) return string.format('%d', n) end

local month = month_of(now)
local user_key, holds_key, record_key = KEYS[1], KEYS[2], KEYS[3]

-- A retry with the same client key returns the reservation it made.
if ARGV[12] == '1' then
  local earlier = redis.call('GET', KEYS[4])
  if earlier then
    local r = redis.call('HMGET', string.sub(record_key, 1, #record_key - #ARGV[2]) .. earlier,
      'amount', 'expires', 'month', 'user')
    if r[1] and r[4] == ARGV[1] then
      local u = redis.call('HMGET', user_key, 'held', 'spent:' .. month, 'limit')
      return {1, earlier, tonumber(r[1]), tonumber(u[2] or '0'), tonumber(u[1] or '0'),
        tonumber(u[3] or '-1'), tonumber(r[2]), r[3], 1}
    end
  end
end

local u = redis.call('HMGET', user_key, 'enabled', 'limit', 'absent_until', 'held', 'spent:' .. month)
local enabled, limit, absent_until = u[1], tonumber(u[2] or '-1'), tonumber(u[3] or '0')
if not enabled or (enabled == 'absent' and absent_until <= now) then
  return {-1, 'NOT_LOADED'}
end
local held, spent = tonumber(u[4] or '0'), tonumber(u[5] or '0')

-- Sweep expired holds: they stop counting, their records stay for late commits.
local expired = redis.call('ZRANGEBYSCORE', holds_key, '-inf', now, 'LIMIT', 0, 100)
if #expired > 0 then
  local freed = 0
  for _, member in ipairs(expired) do
    freed = freed + tonumber(string.match(member, '|(%d+)$'))
  end
  redis.call('ZREM', holds_key, unpack(expired))
  held = redis.call('HINCRBY', user_key, 'held', int(-freed))
end

if enabled ~= '1' then
  return {0, 'NOT_ENABLED', spent, held, limit, month}
end
local amount = tonumber(ARGV[3])
if limit >= 0 and spent + held + amount > limit then
  return {0, 'LIMIT_EXCEEDED', spent, held, limit, month}
end

local expires = now + tonumber(ARGV[4])
redis.call('ZADD', holds_key, expires, ARGV[2] .. '|' .. ARGV[3])
held = redis.call('HINCRBY', user_key, 'held', ARGV[3])
redis.call('HSET', record_key, 'user', ARGV[1], 'amount', ARGV[3], 'month', month, 'expires', int(expires),
  'model', ARGV[7], 'pin', ARGV[8], 'pout', ARGV[9], 'pver', ARGV[10], 'state', 'open')
redis.call('PEXPIRE', record_key, tonumber(ARGV[4]) + tonumber(ARGV[5]))
if ARGV[12] == '1' then
  redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[6])
end
return {1, ARGV[2], amount, spent, held, limit, expires, month, 0}
