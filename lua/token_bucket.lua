-- token_bucket: the generic cell rate algorithm (GCRA), one stored theoretical arrival time.
--
-- A part of the decide script (see decide.lua for KEYS, ARGV and the reply); it defines
-- token_bucket(key, now_us, cost, emission_us, emission_arg, capacity_us, grace_ms) and
-- token_bucket_refund(key, now_us, cost, emission_arg, receipt, grace_ms).
--
-- A bucket of `capacity` tokens refills one token every `emission_us` microseconds. Rust
-- computes both, so the rounding is the same everywhere: emission_us = ceil(window_ms * 1000 /
-- limit) (never faster than limit per window), capacity_us = burst * emission_us (burst
-- defaults to limit). A request spends `cost` tokens.
--
-- Values       cost, emission_us, capacity_us: positive integers; emission_arg is emission_us as
--              ARGV sent it, a string compared with the stored one as it is (no tonumber).
-- Clock        now_us, the caller's Redis TIME (or a contract test's explicit time, when
--              every TTL gets grace_ms more: see decide.lua).
-- Stored       "<tat_us>:<emission_us>": the theoretical arrival time, in Unix microseconds, at
--              which the bucket is full again, and the emission interval it was counted in;
--              TTL until then. A TAT ahead of now stands for (tat - now) / emission spent
--              tokens, so one stored under another emission interval (the limit or the window
--              changed under the same policy name) is translated: its spent tokens, a partly
--              refilled one counted whole (ceil: never more quota than the old state left),
--              become as many of this policy's intervals, new tat = now + spent * emission_us,
--              so a raised limit admits at once and a lowered one denies at once. The next
--              admitted request stores the translation; until then (a denial writes nothing)
--              the stored TAT refills at its old pace and is translated again at each request,
--              and a denial's retry_after_ms and reset_after_ms are reckoned on that pace. On a
--              cluster, a refund after a later hash tag's denial stores it too. Spent tokens
--              that would take more than MAX_DEBT_US to refill are cut to it, so every number
--              stays exact. The capacity is not part of the shape: the TAT is the time until
--              full whatever the capacity. Any other value counts as nothing spent: another
--              algorithm's, or the format before the interval was stored ("<tat_us>", which an
--              upgrade therefore starts afresh).
-- Evaluation   see decide.lua; it fits when the new TAT is at most capacity_us ahead of now;
--              remaining counts whole tokens, reset_after_ms runs until the bucket is full,
--              retry_after_ms is exact, rounded up to the millisecond; the receipt is the new TAT.

-- The longest a translated TAT may lie ahead: policy::MAX_WINDOW_MS in microseconds, the
-- longest any bucket takes to refill, and below 2^53, so Lua's doubles stay exact.
local MAX_DEBT_US = 3153600000000000

local function ceil_div(a, b)
  return math.floor((a + b - 1) / b)
end

local function token_bucket(key, now_us, cost, emission_us, emission_arg, capacity_us, grace_ms)
  local tat = now_us
  -- Set for a TAT counted in another interval: how far ahead it lies, and that interval.
  local ahead, from
  local stored = redis.call('GET', key)
  if stored then
    local t, e = string.match(stored, '^(%d+):(%d+)$')
    if e then
      t = tonumber(t)
      if t > now_us then
        if e == emission_arg then
          tat = t
        else
          -- Counted in another interval: the same spent tokens, in this one's.
          ahead, from = t - now_us, tonumber(e)
          tat = now_us + math.min(ceil_div(ahead, from) * emission_us, MAX_DEBT_US)
        end
      end
    end
  end
  local new_tat = tat + cost * emission_us
  local remaining = math.max(0, math.floor((capacity_us - (tat - now_us)) / emission_us))
  -- Unwritten, an old TAT is full again when it says.
  local reset_after = ceil_div(ahead or (tat - now_us), 1000)

  if new_tat - now_us > capacity_us then
    local wait = new_tat - now_us - capacity_us
    if ahead and cost * emission_us <= capacity_us then
      -- The old TAT refills at its own pace: the cost fits once at most `room` of its tokens
      -- are spent (room < spent, so the product stays below 2^53).
      local room = math.floor((capacity_us - cost * emission_us) / emission_us)
      wait = ahead - room * from
    end
    return false, remaining, reset_after, ceil_div(wait, 1000), new_tat
  end
  local written_reset_after = ceil_div(new_tat - now_us, 1000)
  return true, remaining, reset_after, 0, new_tat,
    string.format('%d:%s', new_tat, emission_arg), written_reset_after + grace_ms,
    written_reset_after
end

-- Gives back what is still outstanding of `cost` tokens spent with the TAT `receipt`: tokens
-- that have refilled since (receipt - now < cost * emission) are not given back twice, so a
-- later request's tokens are never returned with them. A value counted in another emission
-- interval was written since under another shape, and holds none of them: it is left alone.
local function token_bucket_refund(key, now_us, cost, emission_arg, receipt, grace_ms)
  local stored = redis.call('GET', key)
  if not stored then
    return
  end
  local tat, e = string.match(stored, '^(%d+):(%d+)$')
  if e ~= emission_arg then
    return
  end
  tat = tonumber(tat)
  local outstanding = math.min(cost * tonumber(e), math.max(0, receipt - now_us))
  tat = tat - outstanding
  if tat <= now_us then
    redis.call('DEL', key)
  else
    redis.call('SET', key, string.format('%d:%s', tat, e), 'PX',
      ceil_div(tat - now_us, 1000) + grace_ms)
  end
end
