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
-- Each algorithm's evaluate(key, now_us, p) reads its key and writes nothing. It returns
--   fits, receipt, remaining, reset_after, retry_after   the policy as it stands, and
--   write, write_ttl, written_reset_after                when it fits: the value to SET with
--                                                       PX write_ttl, and the reset after it.
-- A write spends exactly `cost` of what remains. The driver writes, all or nothing. Plain values
-- rather than commit/reply closures: the whole script runs on every call, and Redis's Lua pays
-- for every closure, upvalue and table it makes.

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

local mode = ARGV[2]
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

-- The token bucket's two values and the receipt are read only where they are used: each
-- tonumber costs Redis a strtod.
local function params(i)
  local base = 3 + 7 * (i - 1)
  local algorithm = ARGV[base]
  if not evaluate[algorithm] then
    error('unknown algorithm ' .. tostring(algorithm))
  end
  local p = {
    algorithm = algorithm,
    limit = tonumber(ARGV[base + 1]),
    window_ms = tonumber(ARGV[base + 2]),
    cost = tonumber(ARGV[base + 3]),
    ttl_grace_ms = ttl_grace_ms,
  }
  if algorithm == 'token_bucket' then
    p.emission_us = tonumber(ARGV[base + 4])
    p.capacity_us = tonumber(ARGV[base + 5])
  end
  if mode == 'refund' then
    p.receipt = tonumber(ARGV[base + 6])
  end
  return p
end

if mode == 'refund' then
  for i = 1, #KEYS do
    local p = params(i)
    refund[p.algorithm](KEYS[i], now_us, p)
  end
elseif mode ~= 'decide' and mode ~= 'peek' then
  error('unknown mode ' .. tostring(mode))
end

-- Numeric loops and explicit reply indices: ipairs and the length operator each cost a call per
-- step.
local n = #KEYS
local allowed = 1
local evaluations = {}
local costs = {}
for i = 1, n do
  local p = params(i)
  local e = evaluate[p.algorithm](KEYS[i], now_us, p)
  evaluations[i] = e
  costs[i] = p.cost
  if not e.fits then
    allowed = 0
  end
end

local write = allowed == 1 and mode == 'decide'
local reply = { allowed }
for i = 1, n do
  local e = evaluations[i]
  local at = 4 * (i - 1) + 1
  if write then
    redis.call('SET', KEYS[i], e.write, 'PX', e.write_ttl)
    reply[at + 1] = e.remaining - costs[i]
    reply[at + 2] = e.written_reset_after
  else
    reply[at + 1] = e.remaining
    reply[at + 2] = e.reset_after
  end
  reply[at + 3] = e.retry_after
  reply[at + 4] = e.receipt
end
return reply
