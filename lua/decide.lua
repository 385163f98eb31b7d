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

local evaluate = {
  fixed_window = fixed_window,
  sliding_window = sliding_window,
  token_bucket = token_bucket,
}
local refund = {
  fixed_window = fixed_window_refund,
  sliding_window = sliding_window_refund,
  token_bucket = token_bucket_refund,
}

local now_us = tonumber(ARGV[1])
-- Redis expires keys on its own clock. Under an explicit time, keys live a minute longer than
-- their state matters, so a contract test is never raced by real time; what they hold is still
-- read against the explicit time, so the decisions are the same.
local ttl_grace_ms = 60000
if not now_us then
  local time = redis.call('TIME')
  now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
  ttl_grace_ms = 0
end

local function params(i)
  local base = 3 + 7 * (i - 1)
  local p = {
    algorithm = ARGV[base],
    limit = tonumber(ARGV[base + 1]),
    window_ms = tonumber(ARGV[base + 2]),
    cost = tonumber(ARGV[base + 3]),
    emission_us = tonumber(ARGV[base + 4]),
    capacity_us = tonumber(ARGV[base + 5]),
    receipt = tonumber(ARGV[base + 6]),
    ttl_grace_ms = ttl_grace_ms,
  }
  if not evaluate[p.algorithm] then
    error('unknown algorithm ' .. tostring(p.algorithm))
  end
  return p
end

local mode = ARGV[2]
if mode == 'refund' then
  for i, key in ipairs(KEYS) do
    local p = params(i)
    refund[p.algorithm](key, now_us, p)
  end
elseif mode ~= 'decide' and mode ~= 'peek' then
  error('unknown mode ' .. tostring(mode))
end

local allowed = 1
local evaluations = {}
for i, key in ipairs(KEYS) do
  local p = params(i)
  evaluations[i] = evaluate[p.algorithm](key, now_us, p)
  if not evaluations[i].fits then
    allowed = 0
  end
end

if allowed == 1 and mode == 'decide' then
  for _, e in ipairs(evaluations) do
    e.commit()
  end
end

local reply = { allowed }
for _, e in ipairs(evaluations) do
  local remaining, reset_after, retry_after = e.reply()
  reply[#reply + 1] = remaining
  reply[#reply + 1] = reset_after
  reply[#reply + 1] = retry_after
  reply[#reply + 1] = e.receipt
end
return reply
