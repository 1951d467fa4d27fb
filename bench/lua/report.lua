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
