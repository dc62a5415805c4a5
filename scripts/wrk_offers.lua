-- wrk script of scripts/bench_serving.py: the same Bearer header on every request and, given a
-- number of customers, a random demo customer per request (C00000001 ... C<N, 8 digits>):
--
--   wrk -t2 -c16 -d20s --latency -s wrk_offers.lua http://HOST:PORT/healthz -- KEY
--   wrk -t2 -c16 -d20s --latency -s wrk_offers.lua http://HOST:PORT -- KEY 1000000
--
-- done() prints one line "bench-json: {...}" with wrk's exact counts and latencies in
-- microseconds, so the caller need not parse the rounded, unit-suffixed text report.

local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

function init(args)
  customers = tonumber(args[2] or "0")
  wrk.headers["Authorization"] = "Bearer " .. (args[1] or "")
  -- each thread its own stream: without a seed every thread draws the same ids
  math.randomseed(os.time() * 1000 + thread_number * 7919)
end

function request()
  if customers > 0 then
    return wrk.format("GET", string.format("/v1/customers/C%08d/offers",
                                           math.random(1, customers)))
  end
  return wrk.format("GET")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'bench-json: {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, '
    .. '"read": %d, "write": %d, "status": %d, "timeout": %d, "mean_us": %.1f, '
    .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
