-- fixed_window.lua: fixed-window counters for one caller, decided all-or-nothing.
--
-- KEYS[i]   the counter of policy i for this caller, e.g. tollgate:{<sha256 hex>}:per_minute.
--           Every key carries the caller's {hash tag}, so one call stays in one cluster slot.
-- ARGV[1]   now, in Unix milliseconds, or "" to read the Redis server's clock (TIME).
--           Production always sends ""; contract tests send a fixed time.
-- ARGV[2 + 3(i-1) ..]  for KEYS[i]: limit, window_ms, cost (positive integers, cost <= limit).
--
-- Windows are aligned to multiples of window_ms since the Unix epoch. The value of a key is the
-- string "<count>:<window_start_ms>", so `redis-cli GET` shows it and the window lives in the
-- value, not in the key name. Every write sets the TTL to the end of the window in this same
-- call, so no key ever lives without one.
--
-- Reply: { allowed, remaining_1, reset_after_ms_1, retry_after_ms_1, remaining_2, ... }
--   allowed           1 when every policy admits, and each then consumes its cost;
--                     0 when any policy denies, and then nothing is consumed anywhere.
--   remaining_i       quota left in policy i's current window after this call, at least 0.
--   reset_after_ms_i  milliseconds until policy i's current window ends.
--   retry_after_ms_i  0 when policy i admits; otherwise milliseconds until it would.
-- Integers only: Redis truncates Lua numbers, and a nil would end the reply early.

local now = tonumber(ARGV[1])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

local allowed = 1
local windows = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[3 * i - 1])
  local window_ms = tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1])
  local start = now - (now % window_ms)

  local count = 0
  local stored = redis.call('GET', key)
  if stored then
    local stored_count, stored_start = string.match(stored, '^(%d+):(%d+)$')
    if tonumber(stored_start) == start then
      count = tonumber(stored_count)
    end
  end

  local fits = count + cost <= limit
  if not fits then
    allowed = 0
  end
  windows[i] = { limit = limit, cost = cost, start = start, count = count, fits = fits,
                 reset_after = start + window_ms - now }
end

local reply = { allowed }
for i, key in ipairs(KEYS) do
  local w = windows[i]
  local count = w.count
  if allowed == 1 then
    count = count + w.cost
    redis.call('SET', key, string.format('%d:%d', count, w.start), 'PX', w.reset_after)
  end
  local retry_after = 0
  if not w.fits then
    retry_after = w.reset_after
  end
  -- A count above the limit (the limit was lowered mid-window) leaves nothing, not less.
  reply[#reply + 1] = math.max(0, w.limit - count)
  reply[#reply + 1] = w.reset_after
  reply[#reply + 1] = retry_after
end
return reply
