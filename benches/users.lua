-- wrk script: each request names one of USERS callers (default 10,000) in X-User, in turn.
--
-- With RATE set (requests/s over the whole run; THREADS names wrk's -t, default 1), requests are
-- paced to that rate through wrk's delay() hook, and done() prints one machine-readable line:
--   paced: requests=N seconds=S p50_us=X p99_us=Y
-- wrk truncates delay() to whole milliseconds and calls it per connection, so a fixed
-- connections / RATE would run slow (by the truncation and by each response's own latency).
-- Instead each wrk thread keeps a schedule of send times, one every THREADS / RATE seconds, and a
-- connection that comes free waits for the next slot: the mean rate is RATE whatever the
-- latency, as long as the connections can keep up. Two approximations remain:
-- - wrk measures latency from the moment it sends, after the delay, so this is a paced closed
--   loop: a stall that holds back later sends is not charged to them (no coordinated-omission
--   correction, as wrk2 does).
-- - wrk's timers tick in whole milliseconds, so the sends of one millisecond leave together, in
--   bursts of about RATE / 1000: a harsher arrival pattern than evenly spaced, for the baseline
--   and the limiter alike.
local users = tonumber(os.getenv("USERS") or "10000")
local counter = math.random(users)
request = function()
  counter = counter + 1
  return wrk.format("GET", "/user", { ["X-User"] = "user-" .. (counter % users) })
end

local rate = tonumber(os.getenv("RATE") or "")
if rate then
  assert(rate > 0, "RATE must be a positive number of requests/s")
  -- wrk's Lua has no sub-second wall clock; LuaJIT's FFI reaches clock_gettime.
  local ffi = require("ffi")
  ffi.cdef([[
    typedef struct { long tv_sec; long tv_nsec; } tollgate_timespec;
    int clock_gettime(int clock_id, tollgate_timespec *tp);
  ]])
  local CLOCK_MONOTONIC = 1 -- Linux's number
  local now = ffi.new("tollgate_timespec")
  local function now_ms()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, now)
    return tonumber(now.tv_sec) * 1000 + tonumber(now.tv_nsec) / 1e6
  end

  local interval_ms = 1000 * tonumber(os.getenv("THREADS") or "1") / rate
  local next_send_ms
  delay = function()
    local t = now_ms()
    next_send_ms = next_send_ms or t
    local wait = next_send_ms - t
    next_send_ms = next_send_ms + interval_ms
    -- Rounded to the nearest millisecond, all that wrk's timers resolve; an early or late send
    -- moves no later slot, so the mean rate stays RATE.
    return wait > 0 and math.floor(wait + 0.5) or 0
  end

  done = function(summary, latency)
    io.write(string.format("paced: requests=%d seconds=%.3f p50_us=%d p99_us=%d\n",
      summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99)))
  end
end
