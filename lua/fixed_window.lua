-- fixed_window: at most `limit` units of cost in each window aligned to the Unix epoch.
--
-- A part of the decide script (see decide.lua for KEYS, ARGV and the reply); it defines
-- fixed_window(key, now_us, p) and fixed_window_refund(key, now_us, p).
--
-- p            limit, window_ms, cost (positive integers, cost <= limit); receipt for refunds.
-- Clock        now_us, the caller's Redis TIME (or a contract test's explicit time, when
--              every TTL gets p.ttl_grace_ms more: see decide.lua).
-- Stored       "<count>:<window_start_ms>", so `redis-cli GET` shows it; a value from another
--              window counts as 0. Every write sets the TTL to the end of the window.
-- Evaluation   see decide.lua; reset_after_ms runs to the end of the window, retry_after_ms is
--              the same when the cost does not fit; the receipt is the window start.

local function fixed_window(key, now_us, p)
  local now = math.floor(now_us / 1000)
  local start = now - (now % p.window_ms)
  local reset_after = start + p.window_ms - now
  local count = 0
  local stored = redis.call('GET', key)
  if stored then
    local stored_count, stored_start = string.match(stored, '^(%d+):(%d+)$')
    if tonumber(stored_start) == start then
      count = tonumber(stored_count)
    end
  end

  if count + p.cost > p.limit then
    -- A count above the limit (the limit was lowered mid-window) leaves nothing, not less.
    return {
      fits = false,
      receipt = start,
      remaining = math.max(0, p.limit - count),
      reset_after = reset_after,
      retry_after = reset_after,
    }
  end
  return {
    fits = true,
    receipt = start,
    remaining = p.limit - count,
    reset_after = reset_after,
    retry_after = 0,
    write = string.format('%d:%d', count + p.cost, start),
    write_ttl = reset_after + p.ttl_grace_ms,
    written_reset_after = reset_after,
  }
end

-- Gives back `cost` counted in the window p.receipt, if that window is still the stored one.
local function fixed_window_refund(key, now_us, p)
  local stored = redis.call('GET', key)
  if not stored then
    return
  end
  local count, start = string.match(stored, '^(%d+):(%d+)$')
  if tonumber(start) == p.receipt then
    count = math.max(0, tonumber(count) - p.cost)
    redis.call('SET', key, string.format('%d:%d', count, p.receipt), 'KEEPTTL')
  end
end
