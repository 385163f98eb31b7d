-- token_bucket: the generic cell rate algorithm (GCRA), one stored theoretical arrival time.
--
-- A part of the decide script (see decide.lua for KEYS, ARGV and the reply); it defines
-- token_bucket(key, now_us, cost, emission_us, capacity_us, grace_ms) and
-- token_bucket_refund(key, now_us, cost, emission_us, receipt, grace_ms).
--
-- A bucket of `capacity` tokens refills one token every `emission_us` microseconds. Rust
-- computes both, so the rounding is the same everywhere: emission_us = ceil(window_ms * 1000 /
-- limit) (never faster than limit per window), capacity_us = burst * emission_us (burst
-- defaults to limit). A request spends `cost` tokens.
--
-- Values       cost, emission_us, capacity_us: positive integers.
-- Clock        now_us, the caller's Redis TIME (or a contract test's explicit time, when
--              every TTL gets grace_ms more: see decide.lua).
-- Stored       "<tat_us>": the theoretical arrival time, in Unix microseconds, at which the
--              bucket is full again; TTL until then.
-- Evaluation   see decide.lua; it fits when the new TAT is at most capacity_us ahead of now;
--              remaining counts whole tokens, reset_after_ms runs until the bucket is full,
--              retry_after_ms is exact, rounded up to the millisecond; the receipt is the new TAT.

local function ceil_div(a, b)
  return math.floor((a + b - 1) / b)
end

local function token_bucket(key, now_us, cost, emission_us, capacity_us, grace_ms)
  local tat = tonumber(redis.call('GET', key) or '') or 0
  if tat < now_us then
    tat = now_us
  end
  local new_tat = tat + cost * emission_us
  local remaining = math.max(0, math.floor((capacity_us - (tat - now_us)) / emission_us))
  local reset_after = ceil_div(tat - now_us, 1000)

  if new_tat - now_us > capacity_us then
    return false, remaining, reset_after, ceil_div(new_tat - now_us - capacity_us, 1000), new_tat
  end
  local written_reset_after = ceil_div(new_tat - now_us, 1000)
  return true, remaining, reset_after, 0, new_tat,
    string.format('%d', new_tat), written_reset_after + grace_ms, written_reset_after
end

-- Gives back what is still outstanding of `cost` tokens spent with the TAT `receipt`: tokens
-- that have refilled since (receipt - now < cost * emission) are not given back twice, so a
-- later request's tokens are never returned with them.
local function token_bucket_refund(key, now_us, cost, emission_us, receipt, grace_ms)
  local tat = tonumber(redis.call('GET', key) or '')
  if not tat then
    return
  end
  local outstanding = math.min(cost * emission_us, math.max(0, receipt - now_us))
  tat = tat - outstanding
  if tat <= now_us then
    redis.call('DEL', key)
  else
    redis.call('SET', key, string.format('%d', tat), 'PX', ceil_div(tat - now_us, 1000) + grace_ms)
  end
end
