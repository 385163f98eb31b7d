-- sliding_window: the sliding-window counter.
--
-- A part of the decide script (see decide.lua for KEYS, ARGV and the reply); it defines
-- sliding_window(key, now_us, limit, window_ms, window_arg, cost, grace_ms) and
-- sliding_window_refund(key, window_ms, window_arg, cost, receipt).
--
-- A request at `elapsed` ms into the current window sees the previous window's count weighted
-- by how much of it the sliding window still overlaps, (window - elapsed) / window, plus the
-- current count. It fits when prev * (window - elapsed) + (curr + cost) * window <= limit *
-- window: all integers, so Lua and Rust agree to the unit (limit * window_ms is bounded by the
-- configuration so these products stay below 2^53).
--
-- Values       limit, window_ms, cost: positive integers, cost <= limit; window_arg is window_ms
--              as ARGV sent it, a string compared with the stored one as it is (no tonumber).
-- Clock        now_us, the caller's Redis TIME (or a contract test's explicit time, when
--              every TTL gets grace_ms more: see decide.lua).
-- Stored       "<curr>:<prev>:<window_start_ms>:<window_ms>"; TTL to the end of the next window,
--              the last moment the current count still weighs, set with PX by the first write
--              of a window and kept by later ones (no write_ttl: the driver writes with
--              KEEPTTL). It is read only when written under the same window length: as this
--              window's counts when its start is this window's, as the previous window's count
--              when it is the one before. Any other value counts as 0 and is replaced with a
--              fresh TTL: a window length changed under the same policy name, another
--              algorithm's value, or the format before the window length was stored
--              ("<curr>:<prev>:<window_start_ms>", which an upgrade therefore starts afresh).
--              The limit is not part of the shape: a raised limit admits at once, a lowered one
--              denies at once.
-- Evaluation   see decide.lua; reset_after_ms is when nothing weighs any more, retry_after_ms
--              the first millisecond at which the request would fit; the receipt is the window
--              start.

local function sliding_window_retry(curr, prev, elapsed, limit, w, cost)
  if curr + cost <= limit and prev > 0 then
    -- Later in this window the previous count weighs less: the first elapsed' with
    -- prev * (w - elapsed') <= (limit - curr - cost) * w.
    local need = w - math.floor((limit - curr - cost) * w / prev)
    if need < w then
      return need - elapsed
    end
  end
  -- In the next window the current count becomes the previous one; `need` = w means the window
  -- after next, where nothing weighs.
  local need = 0
  if curr > 0 then
    need = math.max(0, w - math.floor(math.max(0, limit - cost) * w / curr))
  end
  return (w - elapsed) + need
end

local function sliding_window(key, now_us, limit, w, w_arg, cost, grace_ms)
  local now = math.floor(now_us / 1000)
  local start = now - (now % w)
  local elapsed = now - start
  local curr, prev = 0, 0
  local overlap = w - elapsed
  -- The TTL the write sets: the end of the next window, unless this window's key already has it.
  local write_ttl = w + overlap + grace_ms
  local stored = redis.call('GET', key)
  if stored then
    local c, pr, s, sw = string.match(stored, '^(%d+):(%d+):(%d+):(%d+)$')
    -- The strings first: a window length changed costs no tonumber.
    if sw == w_arg then
      s = tonumber(s)
      if s == start then
        curr, prev = tonumber(c), tonumber(pr)
        write_ttl = nil
      elseif s == start - w then
        prev = tonumber(c)
      end
    end
  end

  local left = limit * w - prev * overlap - curr * w
  local remaining = 0
  if left > 0 then
    remaining = math.floor(left / w)
  end
  local reset_after = 0
  if curr > 0 then
    reset_after = w + overlap
  elseif prev > 0 then
    reset_after = overlap
  end

  if prev * overlap + (curr + cost) * w > limit * w then
    return false, remaining, reset_after, sliding_window_retry(curr, prev, elapsed, limit, w, cost),
      start
  end
  return true, remaining, reset_after, 0, start,
    string.format('%d:%d:%d:%s', curr + cost, prev, start, w_arg), write_ttl, w + overlap
end

-- Gives back `cost` counted in the window `receipt`: from the current count while that window
-- is current, from the previous count once another request has moved the key to the next one;
-- nothing from a value of another window length, which holds none of it.
-- Both counts back at 0 delete the key: absent means 0, and a key that only a refunded request
-- touched must not stay behind for the rest of its TTL.
local function sliding_window_refund(key, window_ms, window_arg, cost, receipt)
  local stored = redis.call('GET', key)
  if not stored then
    return
  end
  local curr, prev, start, window = string.match(stored, '^(%d+):(%d+):(%d+):(%d+)$')
  if window ~= window_arg then
    return
  end
  curr, prev, start = tonumber(curr), tonumber(prev), tonumber(start)
  if start == receipt then
    curr = math.max(0, curr - cost)
  elseif start == receipt + window_ms then
    prev = math.max(0, prev - cost)
  else
    return
  end
  if curr == 0 and prev == 0 then
    redis.call('DEL', key)
  else
    redis.call('SET', key, string.format('%d:%d:%d:%s', curr, prev, start, window), 'KEEPTTL')
  end
end
