-- wrk script: each request names one of USERS callers (default 10,000) in X-User, in turn.
local users = tonumber(os.getenv("USERS") or "10000")
local counter = math.random(users)
request = function()
  counter = counter + 1
  return wrk.format("GET", "/user", { ["X-User"] = "user-" .. (counter % users) })
end
