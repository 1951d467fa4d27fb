-- With WRK_DELAY_MS set, each connection pauses between requests so the
-- offered rate is fixed (connections * 1000 / delay per second).
local pause = tonumber(os.getenv("WRK_DELAY_MS") or "0")
if pause > 0 then
  function delay() return pause end
end

-- Prints one machine-readable line at the end of a wrk run:
-- RESULT requests seconds rps p50_us p99_us p999_us errors
function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("RESULT %d %.3f %.1f %d %d %d %d\n",
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.connect + e.read + e.write + e.status + e.timeout))
end
