-- wrk script: POST the body in $BODY (Content-Type $CONTENT_TYPE) on every request; print one RESULT
-- line with throughput, latency percentiles, socket errors, non-2xx answers and 503 refusals.
local f = assert(io.open(os.getenv("BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  refused = 0
end

function response(status, headers, body)
  if status == 503 or status == 429 then refused = refused + 1 end
end

function done(summary, latency, requests)
  local s = summary
  local total_refused = 0
  for _, thread in ipairs(threads) do total_refused = total_refused + thread:get("refused") end
  io.write(string.format(
    "RESULT rps=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f requests=%d socket_errors=%d non2xx=%d refused=%d\n",
    s.requests / (s.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, s.requests, s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout,
    s.errors.status, total_refused))
end
