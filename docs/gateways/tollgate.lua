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

-- Not passed on: what describes the connection to tollgate rather than the request, and what
-- only HAProxy may say (the forwarding headers, set below from what HAProxy itself saw).
local function own(name)
  return name == "host" or name == "content-length" or name == "transfer-encoding"
    or name == "connection" or name == "keep-alive" or name == "te" or name == "upgrade"
    or name == "expect" or name == "forwarded" or name:sub(1, 12) == "x-forwarded-"
    or name:sub(1, 11) == "x-original-"
end

core.register_action("tollgate", { "http-req" }, function(txn)
  local request = txn.http:req_get_headers()
  -- Every other header goes, as nginx, Traefik and Caddy send them: a policy may key by one
  -- (by = "header:x-api-key") or apply only when one has a value (when).
  local headers = {}
  for name, values in pairs(request) do
    local lower = string.lower(name)
    if not own(lower) then
      local copy = {}
      for i = 0, #values do
        if values[i] then table.insert(copy, values[i]) end
      end
      headers[lower] = copy
    end
  end
  headers["x-forwarded-method"] = { txn.sf:method() }
  headers["x-forwarded-uri"] = { txn.sf:pathq() }
  headers["x-forwarded-host"] = { first(request["host"]) or "" }
  -- HAProxy names the client itself: whatever the client wrote is not sent.
  headers["x-forwarded-for"] = { txn.sf:src() }
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
