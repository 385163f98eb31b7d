-- decide: every policy of one caller, decided all-or-nothing in one call.
--
-- The scripts of the algorithms (fixed_window.lua, sliding_window.lua, token_bucket.lua) are
-- prepended to this file to make one script, loaded once with SCRIPT LOAD and run with EVALSHA.
--
-- KEYS[i]   the key of policy i, e.g. tollgate:{<sha256 hex>}:per_minute. The keys of one call
--           share one {hash tag}, so the call stays in one cluster slot.
-- ARGV[1]   now, in Unix microseconds, or "" to read the Redis server's clock (TIME).
--           Production always sends ""; contract tests send a fixed time.
-- ARGV[2]   the mode: "decide"; "refund", to give back what an earlier "decide" consumed (by its
--           receipts) and then report like "peek"; or "peek", to report without consuming.
--           Refund and peek serve policies keyed by different things, which cannot share one
--           call: see RedisStore::run.
-- ARGV[3 + 7(i-1) ..]  for KEYS[i]: algorithm, limit, window_ms, cost, emission_us,
--           capacity_us, receipt. Integers are positive; emission_us and capacity_us are used
--           by token_bucket only, receipt by "refund" only.
--
-- Reply: { allowed, remaining_1, reset_after_ms_1, retry_after_ms_1, receipt_1, ... }
--   allowed           1 when every policy admits (and, in "decide", each then consumes its cost);
--                     0 when any policy denies, and then nothing is consumed anywhere.
--   remaining_i       whole units of quota left in policy i after this call, at least 0.
--   reset_after_ms_i  milliseconds until policy i's quota is whole again.
--   retry_after_ms_i  0 when policy i admits; otherwise milliseconds until it would.
--   receipt_i         what "refund" needs to give the cost back (a window start, or 0).
-- Integers only: Redis truncates Lua numbers, and a nil would end the reply early.
--
-- Each algorithm's function reads its key and writes nothing. It returns, in order:
--   fits, remaining, reset_after, retry_after, receipt   the policy as it stands, and, when the
--   write, write_ttl, written_reset_after                cost fits, the value to SET with
--                                                       PX write_ttl, and the reset after it.
-- A write spends exactly `cost` of what remains. This driver writes, all or nothing.
--
-- Values travel as arguments and return values, never in tables or closures: the whole script
-- runs on every call, and Redis's Lua pays for every table, closure and tonumber it makes
-- (callgrind on redis-server, one fixed-window key, instructions per call beyond a PING:
-- 112,000 with commit/reply closures per key, 103,000 with a table per key, 92,500 like this).

local mode = ARGV[2]
local now_us = tonumber(ARGV[1])
-- Redis expires keys on its own clock. Under an explicit time, keys live a minute longer than
-- their state matters, so a contract test is never raced by real time; what they hold is still
-- read against the explicit time, so the decisions are the same.
local grace_ms = 60000
if not now_us then
  local time = redis.call('TIME')
  now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
  grace_ms = 0
end

if mode == 'refund' then
  for i = 1, #KEYS do
    local base = 3 + 7 * (i - 1)
    local algorithm, key = ARGV[base], KEYS[i]
    local window_ms, cost = tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
    local receipt = tonumber(ARGV[base + 6])
    if algorithm == 'fixed_window' then
      fixed_window_refund(key, window_ms, cost, receipt)
    elseif algorithm == 'sliding_window' then
      sliding_window_refund(key, window_ms, cost, receipt)
    elseif algorithm == 'token_bucket' then
      token_bucket_refund(key, now_us, cost, tonumber(ARGV[base + 4]), receipt, grace_ms)
    else
      error('unknown algorithm ' .. tostring(algorithm))
    end
  end
elseif mode ~= 'decide' and mode ~= 'peek' then
  error('unknown mode ' .. tostring(mode))
end

-- The reply as things stand; `writes` holds, per key, what a write needs and what it changes:
-- value, ttl, reset after it, cost. Numeric loops and explicit indices: ipairs and the length
-- operator cost a call per step.
local n = #KEYS
local allowed = 1
local reply = { 0 }
local writes = {}
for i = 1, n do
  local base = 3 + 7 * (i - 1)
  local algorithm, key = ARGV[base], KEYS[i]
  local limit, window_ms = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local cost = tonumber(ARGV[base + 3])
  local fits, remaining, reset_after, retry_after, receipt, write, write_ttl, written_reset_after
  if algorithm == 'fixed_window' then
    fits, remaining, reset_after, retry_after, receipt, write, write_ttl, written_reset_after =
      fixed_window(key, now_us, limit, window_ms, cost, grace_ms)
  elseif algorithm == 'sliding_window' then
    fits, remaining, reset_after, retry_after, receipt, write, write_ttl, written_reset_after =
      sliding_window(key, now_us, limit, window_ms, cost, grace_ms)
  elseif algorithm == 'token_bucket' then
    fits, remaining, reset_after, retry_after, receipt, write, write_ttl, written_reset_after =
      token_bucket(key, now_us, cost, tonumber(ARGV[base + 4]), tonumber(ARGV[base + 5]),
        grace_ms)
  else
    error('unknown algorithm ' .. tostring(algorithm))
  end
  if not fits then
    allowed = 0
  end
  local at = 4 * (i - 1)
  reply[at + 2] = remaining
  reply[at + 3] = reset_after
  reply[at + 4] = retry_after
  reply[at + 5] = receipt
  writes[at + 1] = write
  writes[at + 2] = write_ttl
  writes[at + 3] = written_reset_after
  writes[at + 4] = cost
end

reply[1] = allowed
if allowed == 1 and mode == 'decide' then
  for i = 1, n do
    local at = 4 * (i - 1)
    redis.call('SET', KEYS[i], writes[at + 1], 'PX', writes[at + 2])
    reply[at + 2] = reply[at + 2] - writes[at + 4]
    reply[at + 3] = writes[at + 3]
  end
end
return reply
