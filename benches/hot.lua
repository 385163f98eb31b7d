-- wrk script: every request is the same caller, far over its limit.
request = function()
  return wrk.format("GET", "/user", { ["X-User"] = "hot" })
end
