-- decide: decisions, each over the policies of one request, each all-or-nothing, in one call.
--
-- The scripts of the algorithms (fixed_window.lua, sliding_window.lua, token_bucket.lua) are
-- prepended to this file to make one script, loaded once with SCRIPT LOAD and run with EVALSHA.
--
-- One call carries one decision or a batch of them: on a single Redis, the decisions of the
-- requests in flight together share one EVALSHA (see store/redis/batch.rs). Each is decided on
-- its own, in order, exactly as if it had its own call; a batch only saves round trips.
--
-- KEYS      each decision's keys in turn; the key of policy i is e.g.
--           tollgate:{<sha256 hex>}:per_minute. On a single Redis (or behind Sentinel) one
--           decision holds every policy of its request, whatever its hash tags. On a cluster a
--           call carries one decision, whose keys share one {hash tag}, so it stays in one slot.
-- ARGV[1]   now, in Unix microseconds, or "" to read the Redis server's clock (TIME).
--           Production always sends ""; contract tests send a fixed time.
-- ARGV[2]   the mode of every decision in the call: "decide"; "refund", to give back what an
--           earlier "decide" consumed (by its receipts) and then report like "peek"; or "peek",
--           to report without consuming. Refund and peek serve, on a cluster only, a request
--           whose policies have different hash tags, which cannot share one call: see
--           RedisStore::run. Or "ready", the readiness probe: KEYS[1] alone, no other ARGV, and
--           the reply is empty; it writes KEYS[1] with a TTL and deletes it, so that Redis
--           refuses it exactly when it would refuse a decision's write (out of memory under
--           noeviction, a read-only replica, a user without write permission).
-- ARGV[3 ..] each decision in turn: n, its number of policies (and of keys), then for each of
--           its policies: algorithm, cost, the algorithm's two parameters (limit and window_ms
--           for the windows, emission_us and capacity_us for token_bucket), shadow, and in
--           "refund" only, its receipt. Integers are positive, but a cost may be 0. shadow is 1
--           for a shadow policy, 0 otherwise: a shadow policy never denies; in "decide" it
--           consumes its cost when the decision is admitted and it fits, and nothing otherwise.
--           A refund lists only the policies that consumed. Each value costs Redis about 1,000
--           instructions to pass, so a policy sends only what its algorithm reads. Integers
--           are in plain decimal, as Rust writes them: window_ms and emission_us are stored
--           with each value (its shape) and compared with the stored text as sent.
--
-- Reply: each decision's part in turn,
--   { allowed, remaining_1, reset_after_ms_1, retry_after_ms_1, receipt_1, ... }
--   allowed           1 when every policy that is not shadow admits (and, in "decide", each
--                     policy that fits then consumes its cost, shadow ones included);
--                     0 when any of them denies, and then nothing is written anywhere.
--   remaining_i       whole units of quota left in policy i after this call, at least 0.
--   reset_after_ms_i  milliseconds until policy i's quota is whole again.
--   retry_after_ms_i  0 when policy i admits; otherwise milliseconds until it would (so a
--                     shadow policy that would have denied an admitted decision says so here,
--                     and its remaining and reset are as it stands, unconsumed).
--   receipt_i         what "refund" needs to give the cost back (a window start, or 0).
-- or, when Redis refused one of its commands (a key of another type, say), the error's text
-- alone, so one caller's broken key fails only that caller's decision. In "decide" and "peek"
-- every key is read before any is written, and Redis refuses a script's writes, if at all, at
-- its first: a failed decision has consumed nothing. In "refund" the keys are given back in
-- turn, so an error may leave the earlier ones given back and the rest not: the count errs high.
-- Integers only, apart from that text: Redis truncates Lua numbers, and a nil would end the
-- reply early.
--
-- Each algorithm's function reads its key and writes nothing. It returns, in order:
--   fits, remaining, reset_after, retry_after, receipt   the policy as it stands, and, when the
--   write, write_ttl, written_reset_after                cost fits, the value to SET with
--                                                       PX write_ttl (with KEEPTTL when it is
--                                                       nil: the key has its TTL), and the
--                                                       reset after it.
-- A write spends exactly `cost` of what remains. The driver below writes, all or nothing
-- (a shadow policy that does not fit has no write, and is skipped).
--
-- Values travel as arguments and return values, never in tables or closures: the whole script
-- runs on every call, and Redis's Lua pays for every table, closure and tonumber it makes (see
-- BENCHMARKS.md, "What a decision costs Redis").

local mode = ARGV[2]
if mode ~= 'decide' and mode ~= 'refund' and mode ~= 'peek' then
  -- Tested here, past the decisions' modes, so that it costs a decision nothing.
  if mode == 'ready' then
    -- Set with a TTL before it is deleted: even a script cut short leaves no key without one.
    redis.call('SET', KEYS[1], '1', 'PX', 1000)
    redis.call('DEL', KEYS[1])
    return {}
  end
  error('unknown mode ' .. tostring(mode))
end
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

local reply = {}
-- Per key of the decision being decided, what a write needs and what it changes: value, ttl,
-- reset after it, cost. One table for the whole call: each decision sets every entry it reads,
-- and a table per decision cost Redis about 2,500 instructions each (benches/script_cost.sh).
local writes = {}

-- One decision: its n keys from KEYS[k + 1], its values from ARGV[a]; appends its part of the
-- reply at reply[r + 1] and on. Numeric loops and explicit indices: ipairs and the length
-- operator cost a call per step.
-- Each policy's values in ARGV: five, and a receipt in "refund".
local stride = 5
if mode == 'refund' then
  stride = 6
end

local function decide_one(k, a, n, r)
  if mode == 'refund' then
    for i = 1, n do
      local base = a + stride * (i - 1)
      local algorithm, key = ARGV[base], KEYS[k + i]
      local cost, receipt = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 5])
      if algorithm == 'fixed_window' then
        fixed_window_refund(key, ARGV[base + 3], cost, receipt)
      elseif algorithm == 'sliding_window' then
        sliding_window_refund(key, tonumber(ARGV[base + 3]), ARGV[base + 3], cost, receipt)
      elseif algorithm == 'token_bucket' then
        token_bucket_refund(key, now_us, cost, ARGV[base + 2], receipt, grace_ms)
      else
        error('unknown algorithm ' .. tostring(algorithm))
      end
    end
  end

  -- The reply as things stand, and in `writes` what each key's write would be.
  local allowed = 1
  for i = 1, n do
    local base = a + stride * (i - 1)
    local algorithm, key = ARGV[base], KEYS[k + i]
    local cost = tonumber(ARGV[base + 1])
    local first, second = tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
    local fits, remaining, reset_after, retry_after, receipt, write, write_ttl, written_reset_after
    if algorithm == 'fixed_window' then
      fits, remaining, reset_after, retry_after, receipt, write, write_ttl, written_reset_after =
        fixed_window(key, now_us, first, second, ARGV[base + 3], cost, grace_ms)
    elseif algorithm == 'sliding_window' then
      fits, remaining, reset_after, retry_after, receipt, write, write_ttl, written_reset_after =
        sliding_window(key, now_us, first, second, ARGV[base + 3], cost, grace_ms)
    elseif algorithm == 'token_bucket' then
      fits, remaining, reset_after, retry_after, receipt, write, write_ttl, written_reset_after =
        token_bucket(key, now_us, cost, first, ARGV[base + 2], second, grace_ms)
    else
      error('unknown algorithm ' .. tostring(algorithm))
    end
    -- A shadow policy's denial is reported in its retry_after, never in `allowed`.
    if not fits and ARGV[base + 4] ~= '1' then
      allowed = 0
    end
    local at = r + 1 + 4 * (i - 1)
    reply[at + 1] = remaining
    reply[at + 2] = reset_after
    reply[at + 3] = retry_after
    reply[at + 4] = receipt
    local w = 4 * (i - 1)
    writes[w + 1] = write
    writes[w + 2] = write_ttl
    writes[w + 3] = written_reset_after
    writes[w + 4] = cost
  end

  reply[r + 1] = allowed
  if allowed == 1 and mode == 'decide' then
    for i = 1, n do
      local at = r + 1 + 4 * (i - 1)
      local w = 4 * (i - 1)
      -- A shadow policy that does not fit has no write: it consumes nothing. Nor does a
      -- check that costs 0 (Envoy's check-only descriptor), which must leave no key behind.
      if writes[w + 1] and writes[w + 4] > 0 then
        if writes[w + 2] then
          redis.call('SET', KEYS[k + i], writes[w + 1], 'PX', writes[w + 2])
        else
          redis.call('SET', KEYS[k + i], writes[w + 1], 'KEEPTTL')
        end
        reply[at + 1] = reply[at + 1] - writes[w + 4]
        reply[at + 2] = writes[w + 3]
      end
    end
  end
end

-- Each decision under pcall, so that an error fails that decision alone. Its partial reply is
-- taken back and replaced by the error's text (a table {err = ...} when Redis refused a
-- command, a string when the script raised one).
local k, a, r = 0, 3, 0
local last = #ARGV
while a <= last do
  local n = tonumber(ARGV[a])
  local ok, failure = pcall(decide_one, k, a + 1, n, r)
  if ok then
    r = r + 1 + 4 * n
  else
    for i = r + 1 + 4 * n, r + 1, -1 do
      reply[i] = nil
    end
    r = r + 1
    reply[r] = type(failure) == 'table' and tostring(failure.err) or tostring(failure)
  end
  k = k + n
  a = a + 1 + stride * n
end
return reply
