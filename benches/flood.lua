-- wrk script for benches/flood.sh: every request names a caller never named before in X-User,
-- so each one makes a new entry in the store.
--
-- CALLERS (default: no end) stops the new names at that many over the run: after it each thread
-- repeats its last name, so the store holds exactly CALLERS callers. THREADS names wrk's -t
-- (default 1), to share CALLERS out; RUN is put in every name, so two runs never meet. RATE
-- paces the requests as benches/users.lua does (whose pacing this reuses: run from the
-- repository's root).
dofile("benches/users.lua")

local callers = tonumber(os.getenv("CALLERS") or "0")
local threads = tonumber(os.getenv("THREADS") or "1")

local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

local prefix, quota
local counter = 0
function init(args)
  prefix = "flood-" .. (os.getenv("RUN") or "") .. "-" .. id .. "-"
  quota = callers > 0 and math.floor(callers / threads) or math.huge
end

request = function()
  if counter < quota then
    counter = counter + 1
  end
  return wrk.format("GET", "/user", { ["X-User"] = prefix .. counter })
end
