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
-- Evaluation   fits; commit() consumes the cost; reply() gives remaining, reset_after_ms (to the
--              end of the window) and retry_after_ms (0 when it fits); receipt is the window
--              start the cost was counted in.

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

  local e = { fits = count + p.cost <= p.limit, receipt = start }
  function e.commit()
    count = count + p.cost
    redis.call('SET', key, string.format('%d:%d', count, start), 'PX',
      reset_after + p.ttl_grace_ms)
  end
  function e.reply()
    local retry_after = 0
    if not e.fits then
      retry_after = reset_after
    end
    -- A count above the limit (the limit was lowered mid-window) leaves nothing, not less.
    return math.max(0, p.limit - count), reset_after, retry_after
  end
  return e
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
