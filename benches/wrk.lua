-- wrk request generator for benches/run.sh. Environment: KEY (API key),
-- SUBSCRIBERS (how many exist), MODE: patch (random subscriber, random
-- presence), keyed (the same with a fresh idempotency key per request, as
-- the official SDKs send), replay (one idempotency key, the same request
-- every time), get (random subscriber), heartbeat (random subscriber
-- online with a 60 s lease, a fresh idempotency key per request: the
-- keyed write with ttlSeconds).
local key = os.getenv("KEY")
local subscribers = tonumber(os.getenv("SUBSCRIBERS") or "100000")
local mode = os.getenv("MODE") or "patch"
local auth = "ApiKey " .. key

-- Different in every wrk run (the main state's math.random is not seeded,
-- so the seeds repeat): keyed runs repeated against one server send fresh
-- keys, not replays of the previous run's.
local run_id = os.time()

function setup(thread)
  thread:set("seed", math.random(1, 1000000))
  thread:set("run", run_id)
end

local counter = 0

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
  if mode == "keyed" or mode == "heartbeat" then
    counter = counter + 1
    headers["idempotency-key"] = string.format("bench-%d-%d-%d-%d", run or 0, seed or 0, math.random(0, 1000000000), counter)
  end
  if mode == "heartbeat" then
    return wrk.format("PATCH", "/v1/subscribers/" .. id() .. "/online-status", headers, '{"isOnline": true, "ttlSeconds": 60}')
  end
  local online = (math.random(0, 1) == 1) and "true" or "false"
  return wrk.format("PATCH", "/v1/subscribers/" .. id() .. "/online-status", headers, '{"isOnline": ' .. online .. '}')
end
