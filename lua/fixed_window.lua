-- fixed_window: at most `limit` units of cost in each window aligned to the Unix epoch.
--
-- A part of the decide script (see decide.lua for KEYS, ARGV and the reply); it defines
-- fixed_window(key, now_us, limit, window_ms, cost, grace_ms) and
-- fixed_window_refund(key, cost, receipt).
--
-- Values       limit, window_ms, cost: positive integers, cost <= limit.
-- Clock        now_us, the caller's Redis TIME (or a contract test's explicit time, when
--              every TTL gets grace_ms more: see decide.lua).
-- Stored       "<count>:<window_start_ms>", so `redis-cli GET` shows it; a value from another
--              window counts as 0. The first write of a window sets the TTL to the end of the
--              window; later ones keep it (no write_ttl: the driver writes with KEEPTTL, which
--              spares Redis formatting a number).
-- Evaluation   see decide.lua; reset_after_ms runs to the end of the window, retry_after_ms is
--              the same when the cost does not fit; the receipt is the window start.

local function fixed_window(key, now_us, limit, window_ms, cost, grace_ms)
  local now = math.floor(now_us / 1000)
  local start = now - (now % window_ms)
  local reset_after = start + window_ms - now
  local count = 0
  -- The TTL the write sets: the end of the window, unless this window's key already has it.
  local write_ttl = reset_after + grace_ms
  local stored = redis.call('GET', key)
  if stored then
    local stored_count, stored_start = string.match(stored, '^(%d+):(%d+)$')
    if tonumber(stored_start) == start then
      count = tonumber(stored_count)
      write_ttl = nil
    end
  end

  if count + cost > limit then
    -- A count above the limit (the limit was lowered mid-window) leaves nothing, not less.
    return false, math.max(0, limit - count), reset_after, reset_after, start
  end
  return true, limit - count, reset_after, 0, start,
    string.format('%d:%d', count + cost, start), write_ttl, reset_after
end

-- Gives back `cost` counted in the window `receipt`, if that window is still the stored one.
-- A count that returns to 0 deletes the key: absent means 0, and a key that only a refunded
-- request touched must not stay behind for the rest of its window.
local function fixed_window_refund(key, cost, receipt)
  local stored = redis.call('GET', key)
  if not stored then
    return
  end
  local count, start = string.match(stored, '^(%d+):(%d+)$')
  if tonumber(start) == receipt then
    count = math.max(0, tonumber(count) - cost)
    if count == 0 then
      redis.call('DEL', key)
    else
      redis.call('SET', key, string.format('%d:%d', count, receipt), 'KEEPTTL')
    end
  end
end
