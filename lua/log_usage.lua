--[[ log_usage.lua: record spend that already happened (no reservation), as the guide's logAIUsage.

Adds the cost to the month's committed spend and request count and appends the usage event, plus one
alert event per limit threshold (80, 90, 100 %) first crossed this month. It never refuses: the money
was spent. A retry with the same request id returns the first result and changes nothing.

KEYS[1]  user hash            <prefix>:{P}:u:<user>
KEYS[2]  idempotency key      <prefix>:{P}:uk:<len(user)>:<user>:<request id>  (holds "id|cost|month|ts")
KEYS[3]  partition stream     <prefix>:{P}:events

ARGV[1]  user id
ARGV[2]  usage id (the row id in ai_usage_log)
ARGV[3]  model id
ARGV[4]  prompt tokens
ARGV[5]  completion tokens
ARGV[6]  cost, nano-USD
ARGV[7]  pricing version, or ""
ARGV[8]  metadata, JSON object text, or ""
ARGV[9]  idempotency TTL, ms
ARGV[10] clock offset, ms (0 in production)

The usage event's fields: type=usage, id, user, model, prompt, completion, total, cost (nano-USD),
pver, meta, ts (Redis time, ms), month (YYYY-MM), seq (the user's request count this month, after it).
Alert events: type=alert, id, user, month, threshold (80|90|100), spent, limit, ts.

Returns
  {1, id, cost, spent, limit, month, replayed, created_ms}
  {-1, "NOT_LOADED"}   no unlock state in Redis: load it from Postgres, then retry
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

local user_key = KEYS[1]
local earlier = redis.call('GET', KEYS[2])
if earlier then
  local id, cost, month, created = string.match(earlier, '^(.*)|(%d+)|([%d-]+)|(%d+)$')
  local u = redis.call('HMGET', user_key, 'spent:' .. month, 'limit')
  return {1, id, tonumber(cost), tonumber(u[1] or '0'), tonumber(u[2] or '-1'), month, 1, tonumber(created)}
end
if not redis.call('HGET', user_key, 'enabled') then return {-1, 'NOT_LOADED'} end

local month = month_of(now)
local cost, prompt, completion = tonumber(ARGV[6]), tonumber(ARGV[4]), tonumber(ARGV[5])
local spent = redis.call('HINCRBY', user_key, 'spent:' .. month, ARGV[6])
local seq = redis.call('HINCRBY', user_key, 'count:' .. month, 1)
redis.call('XADD', KEYS[3], '*', 'type', 'usage', 'id', ARGV[2], 'user', ARGV[1], 'model', ARGV[3],
  'prompt', ARGV[4], 'completion', ARGV[5], 'total', int(prompt + completion), 'cost', ARGV[6],
  'pver', ARGV[7], 'meta', ARGV[8], 'ts', int(now), 'month', month, 'seq', seq)

local u = redis.call('HMGET', user_key, 'limit', 'alerted:' .. month)
local limit, alerted = tonumber(u[1] or '-1'), tonumber(u[2] or '0')
if limit >= 0 and spent > 0 then
  for _, pct in ipairs({80, 90, 100}) do
    local mark = math.floor(limit / 100) * pct + math.ceil((limit % 100) * pct / 100)
    if pct > alerted and spent >= mark then
      redis.call('XADD', KEYS[3], '*', 'type', 'alert', 'id', 'alert:' .. month .. ':' .. pct .. ':' .. ARGV[1],
        'user', ARGV[1], 'month', month, 'threshold', pct, 'spent', int(spent), 'limit', int(limit), 'ts', int(now))
      alerted = pct
    end
  end
  redis.call('HSET', user_key, 'alerted:' .. month, alerted)
end

redis.call('SET', KEYS[2], ARGV[2] .. '|' .. ARGV[6] .. '|' .. month .. '|' .. int(now), 'PX', ARGV[9])
return {1, ARGV[2], cost, spent, limit, month, 0, now}
