-- wrk script: each request asks the forward-auth endpoint about GET /user for one of USERS
-- callers (default 10,000) in turn, with the headers Traefik and Caddy send.
local users = tonumber(os.getenv("USERS") or "10000")
local counter = math.random(users)
request = function()
  counter = counter + 1
  return wrk.format("GET", "/check", {
    ["X-User"] = "user-" .. (counter % users),
    ["X-Forwarded-Method"] = "GET",
    ["X-Forwarded-Uri"] = "/user",
  })
end
