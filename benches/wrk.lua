-- wrk request generator for benches/run.sh. Environment: KEY (API key),
-- SUBSCRIBERS (how many exist), MODE: patch (random subscriber, random
-- presence), replay (one idempotency key, the same request every time),
-- get (random subscriber).
local key = os.getenv("KEY")
local subscribers = tonumber(os.getenv("SUBSCRIBERS") or "100000")
local mode = os.getenv("MODE") or "patch"
local auth = "ApiKey " .. key

function setup(thread)
  thread:set("seed", math.random(1, 1000000))
end

function init(args)
  math.randomseed(seed or os.time())
end

local function id()
  return string.format("subscriber-%07d", math.random(0, subscribers - 1))
end

request = function()
  if mode == "get" then
    return wrk.format("GET", "/v1/subscribers/" .. id(), { ["Authorization"] = auth })
  end
  local headers = { ["Authorization"] = auth, ["Content-Type"] = "application/json" }
  if mode == "replay" then
    headers["idempotency-key"] = "bench-replay-key"
    return wrk.format("PATCH", "/v1/subscribers/subscriber-0000001/online-status", headers, '{"isOnline": true}')
  end
  local online = (math.random(0, 1) == 1) and "true" or "false"
  return wrk.format("PATCH", "/v1/subscribers/" .. id() .. "/online-status", headers, '{"isOnline": ' .. online .. '}')
end
