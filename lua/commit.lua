--[[ commit.lua: turn a reservation into committed spend and a usage event, atomically.

Frees the reservation's hold (if it has not expired), adds the actual cost to the month's committed
spend and request count, appends the usage event to the partition's stream, and appends one alert event
per limit threshold (80, 90, 100 %) first crossed this month. A commit after the hold expired is still
charged: the record outlives the hold. A retry returns the first result and changes nothing.

KEYS[1]  reservation record   <prefix>:{P}:r:<handle>
KEYS[2]  partition stream     <prefix>:{P}:events
The user's hash <base>u:<user> and holds zset <base>h:<user> are named from the record's user; they carry
the same {P} hash tag, so the script touches one slot only.

ARGV[1]  key base "<prefix>:{P}:"
ARGV[2]  handle
ARGV[3]  prompt tokens (integer >= 0)
ARGV[4]  completion tokens (integer >= 0)
ARGV[5]  cost, nano-USD, or "" to price the tokens with the reservation's model prices
ARGV[6]  model id, or "" to use the reservation's model ("unknown" when neither names one)
ARGV[7]  pricing version of ARGV[5], or ""
ARGV[8]  metadata, JSON object text, or ""
ARGV[9]  idempotency TTL, ms (how long the result is remembered)
ARGV[10] clock offset, ms (0 in production)

The usage event's fields: type=usage, id, user, model, prompt, completion, total, cost (nano-USD),
pver, meta, ts (Redis time, ms), month (YYYY-MM), seq (the user's request count this month, after it).
Alert events: type=alert, id, user, month, threshold (80|90|100), spent, limit, ts.

Returns
  {1, handle, cost, spent, limit, month, replayed, created_ms}   committed (replayed = 1 on a retry)
  {0, "NO_SUCH_RESERVATION"}   unknown or forgotten handle
  {0, "RELEASED"}              the reservation was released; nothing is charged
  {0, "NO_PRICE"}              no cost given and the reservation has no model prices
Amounts are integers of nano-USD; limit -1 means unlimited.
]]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[10])

local function month_of(ms)
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

local rec = redis.call('HMGET', KEYS[1], 'user', 'amount', 'state', 'model', 'pin', 'pout', 'pver',
  'cost', 'cmonth', 'created')
local user, amount, state = rec[1], rec[2], rec[3]
if not user then return {0, 'NO_SUCH_RESERVATION'} end
local base = ARGV[1]
local user_key, holds_key = base .. 'u:' .. user, base .. 'h:' .. user
if state == 'committed' then
  local u = redis.call('HMGET', user_key, 'spent:' .. rec[9], 'limit')
  return {1, ARGV[2], tonumber(rec[8]), tonumber(u[1] or '0'), tonumber(u[2] or '-1'), rec[9], 1, tonumber(rec[10])}
end
if state == 'released' then return {0, 'RELEASED'} end

-- The cost: given by the caller, or the tokens at the prices held with the reservation, computed
-- exactly and rounded once, up. Prices (<= 1e13) are split so every product stays below 2^53.
local prompt, completion = tonumber(ARGV[3]), tonumber(ARGV[4])
local model, pver, cost = rec[4], rec[7], nil
if ARGV[5] ~= '' then
  cost = tonumber(ARGV[5])
  if ARGV[6] ~= '' then model = ARGV[6] end
  pver = ARGV[7]
else
  local pin, pout = tonumber(rec[5] or ''), tonumber(rec[6] or '')
  if not pin or not pout then return {0, 'NO_PRICE'} end
  local frac = prompt * (pin % 1000000) + completion * (pout % 1000000)
  cost = prompt * math.floor(pin / 1000000) + completion * math.floor(pout / 1000000)
    + math.floor(frac / 1000000) + ((frac % 1000000 > 0) and 1 or 0)
end

-- A reservation made by amount and committed with a provider cost may name no model at all.
if not model or model == '' then model = 'unknown' end

-- Free the hold if it is still open (an expired one was already swept or will not count).
if redis.call('ZREM', holds_key, ARGV[2] .. '|' .. amount) == 1 then
  redis.call('HINCRBY', user_key, 'held', int(-tonumber(amount)))
end

local month = month_of(now)
local spent = redis.call('HINCRBY', user_key, 'spent:' .. month, int(cost))
local seq = redis.call('HINCRBY', user_key, 'count:' .. month, 1)
redis.call('XADD', KEYS[2], '*', 'type', 'usage', 'id', ARGV[2], 'user', user, 'model', model,
  'prompt', ARGV[3], 'completion', ARGV[4], 'total', int(prompt + completion), 'cost', int(cost),
  'pver', pver, 'meta', ARGV[8], 'ts', int(now), 'month', month, 'seq', seq)

-- Thresholds: one alert per threshold per month, when committed spend first reaches it.
local u = redis.call('HMGET', user_key, 'limit', 'alerted:' .. month)
local limit, alerted = tonumber(u[1] or '-1'), tonumber(u[2] or '0')
if limit >= 0 and spent > 0 then
  for _, pct in ipairs({80, 90, 100}) do
    local mark = math.floor(limit / 100) * pct + math.ceil((limit % 100) * pct / 100)
    if pct > alerted and spent >= mark then
      redis.call('XADD', KEYS[2], '*', 'type', 'alert', 'id', 'alert:' .. month .. ':' .. pct .. ':' .. user,
        'user', user, 'month', month, 'threshold', pct, 'spent', int(spent), 'limit', int(limit), 'ts', int(now))
      alerted = pct
    end
  end
  redis.call('HSET', user_key, 'alerted:' .. month, alerted)
end

redis.call('HSET', KEYS[1], 'state', 'committed', 'cost', int(cost), 'cmonth', month, 'created', int(now))
redis.call('PEXPIRE', KEYS[1], ARGV[9])
return {1, ARGV[2], cost, spent, limit, month, 0, now}
