--[[ access.lua: the guide's canUserAccessAI in one round trip. Read-only.

Allowed when the user is enabled and committed spend this month is below the limit (limit -1 = unlimited).

KEYS[1]  user hash   <prefix>:{P}:u:<user>

ARGV[1]  clock offset, ms (0 in production)

Returns
  {allowed, reason, spent, limit, held, month}
      allowed 1/0; reason "" | "NOT_ENABLED" | "LIMIT_EXCEEDED"; spent and held (open holds, including
      expired ones not yet swept) in nano-USD; limit -1 = unlimited
  {-1, "NOT_LOADED"}   no unlock state in Redis: load it from Postgres, then retry
]]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])

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

local month = month_of(now)
local u = redis.call('HMGET', KEYS[1], 'enabled', 'limit', 'absent_until', 'spent:' .. month, 'held')
local enabled, limit = u[1], tonumber(u[2] or '-1')
if not enabled or (enabled == 'absent' and tonumber(u[3] or '0') <= now) then
  return {-1, 'NOT_LOADED'}
end
local spent, held = tonumber(u[4] or '0'), tonumber(u[5] or '0')
if enabled ~= '1' then return {0, 'NOT_ENABLED', spent, limit, held, month} end
if limit >= 0 and spent >= limit then return {0, 'LIMIT_EXCEEDED', spent, limit, held, month} end
return {1, '', spent, limit, held, month}
