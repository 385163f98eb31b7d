-- Asks tollgate (127.0.0.1:8000) about each request; a denial, tollgate's answer with its
-- rate-limit headers and body, goes to the client. tollgate unreachable: the request is refused
-- with 503 (fail closed); return instead of replying to let it through (fail open).
local TOLLGATE = "http://127.0.0.1:8000/check"

local function first(values)
  if values == nil then return nil end
  return values[0] or values[1]
end

local function passed(name)
  return name == "retry-after" or name == "ratelimit" or name == "ratelimit-policy"
    or name:sub(1, 12) == "x-ratelimit-" or name == "x-rate-limit" or name == "content-type"
end

core.register_action("tollgate", { "http-req" }, function(txn)
  local request = txn.http:req_get_headers()
  local headers = {
    ["x-forwarded-method"] = { txn.sf:method() },
    ["x-forwarded-uri"] = { txn.sf:pathq() },
    ["x-forwarded-host"] = { first(request["host"]) or "" },
    -- HAProxy names the client itself: whatever the client wrote is not sent.
    ["x-forwarded-for"] = { txn.sf:src() },
  }
  local user = first(request["x-user"])
  if user then headers["x-user"] = { user } end
  local answer = core.httpclient():get({ url = TOLLGATE, headers = headers, timeout = 1000 })
  if answer == nil or answer.status == nil or answer.status == 0 then
    txn:done(txn:reply({ status = 503, body = "rate limiter unreachable\n" }))
    return
  end
  if answer.status >= 200 and answer.status < 300 then return end
  local reply = txn:reply({ status = answer.status, body = answer.body or "" })
  for name, values in pairs(answer.headers or {}) do
    local lower = string.lower(name)
    local value = first(values)
    if passed(lower) and value then reply:add_header(lower, value) end
  end
  txn:done(reply)
end, 0)
