-- fixed_window: at most `limit` units of cost in each window aligned to the Unix epoch.
--
-- A part of the decide script (see decide.lua for KEYS, ARGV and the reply); it defines
-- fixed_window(key, now_us, limit, window_ms, window_arg, cost, grace_ms) and
-- fixed_window_refund(key, window_arg, cost, receipt).
--
-- Values       limit, window_ms, cost: positive integers, cost <= limit; window_arg is window_ms
--              as ARGV sent it, a string compared with the stored one as it is (no tonumber).
-- Clock        now_us, the caller's Redis TIME (or a contract test's explicit time, when
--              every TTL gets grace_ms more: see decide.lua).
-- Stored       "<count>:<window_start_ms>:<window_ms>", so `redis-cli GET` shows it. It is read
--              only when written under the same window start and the same window length (its
--              shape); any other value counts as 0, whether from another window, a window
--              length changed under the same policy name, another algorithm, or the format
--              before the window length was stored ("<count>:<window_start_ms>", which an
--              upgrade therefore starts afresh). The limit is not part of the shape: a raised
--              limit admits at once, a lowered one denies at once. The first write of a shape
--              sets the TTL to the end of the window with PX; later ones keep it (no write_ttl:
--              the driver writes with KEEPTTL, which spares Redis formatting a number), so
--              KEEPTTL only ever keeps an expiry that this very shape set.
-- Evaluation   see decide.lua; reset_after_ms runs to the end of the window, retry_after_ms is
--              the same when the cost does not fit; the receipt is the window start.

local function fixed_window(key, now_us, limit, window_ms, window_arg, cost, grace_ms)
  local now = math.floor(now_us / 1000)
  local start = now - (now % window_ms)
  local reset_after = start + window_ms - now
  local count = 0
  -- The TTL the write sets: the end of the window, unless this shape's key already has it.
  local write_ttl = reset_after + grace_ms
  local stored = redis.call('GET', key)
  if stored then
    local stored_count, stored_start, stored_window = string.match(stored, '^(%d+):(%d+):(%d+)$')
    -- The strings first: a window length changed costs no tonumber.
    if stored_window == window_arg and tonumber(stored_start) == start then
      count = tonumber(stored_count)
      write_ttl = nil
    end
  end

  if count + cost > limit then
    -- A count above the limit (the limit was lowered mid-window) leaves nothing, not less.
    return false, math.max(0, limit - count), reset_after, reset_after, start
  end
  return true, limit - count, reset_after, 0, start,
    string.format('%d:%d:%s', count + cost, start, window_arg), write_ttl, reset_after
end

-- Gives back `cost` counted in the window `receipt`, if that window, of the same length, is
-- still the stored one: a value of another shape holds none of it.
-- A count that returns to 0 deletes the key: absent means 0, and a key that only a refunded
-- request touched must not stay behind for the rest of its window.
local function fixed_window_refund(key, window_arg, cost, receipt)
  local stored = redis.call('GET', key)
  if not stored then
    return
  end
  local count, start, window = string.match(stored, '^(%d+):(%d+):(%d+)$')
  if window == window_arg and tonumber(start) == receipt then
    count = math.max(0, tonumber(count) - cost)
    if count == 0 then
      redis.call('DEL', key)
    else
      redis.call('SET', key, string.format('%d:%d:%s', count, receipt, window), 'KEEPTTL')
    end
  end
end
