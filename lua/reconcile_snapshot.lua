--[[ reconcile_snapshot.lua: one consistent view of some users' committed spend and the events not yet
flushed to Postgres, for `tollgate reconcile`. Read-only.

Because spend and events change together in one script (commit, log_usage), reading both in one script
gives an exact point: every event with seq <= a user's count is counted in its spent, none after.

KEYS[1..n]  user hashes of one partition   <prefix>:{P}:u:<user>
KEYS[n+1]   the partition stream            <prefix>:{P}:events

ARGV[1]       month, YYYY-MM
ARGV[2]       clock offset, ms (0 in production)
ARGV[3..n+2]  the user ids of KEYS[1..n], in the same order

Returns {users, events, now_ms}
  users:  {spent_1, count_1, spent_2, count_2, ...}   nano-USD and request count of the month, per user
  events: {id, user, cost, seq, ...}                   usage events of these users and this month still
                                                       in the stream (unacknowledged or not yet deleted)
  now_ms: Redis time of the snapshot (plus the offset), ms
]]

local month = ARGV[1]
local n = #KEYS - 1
local wanted = {}
local users = {}
for i = 1, n do
  local u = redis.call('HMGET', KEYS[i], 'spent:' .. month, 'count:' .. month)
  users[#users + 1] = tonumber(u[1] or '0')
  users[#users + 1] = tonumber(u[2] or '0')
  wanted[ARGV[i + 2]] = true
end

local events = {}
local entries = redis.call('XRANGE', KEYS[n + 1], '-', '+')
for _, entry in ipairs(entries) do
  local f = entry[2]
  local e = {}
  for j = 1, #f, 2 do e[f[j]] = f[j + 1] end
  if e.type == 'usage' and e.month == month and e.user and wanted[e.user] then
    events[#events + 1] = e.id or ''
    events[#events + 1] = e.user
    events[#events + 1] = e.cost or '0'
    events[#events + 1] = e.seq or '0'
  end
end
local t = redis.call('TIME')
return {users, events, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])}
