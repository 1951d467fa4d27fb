-- POST a 1 KiB body to the async routes of upstreams a, b and c in turn
-- (bench/replicas.toml), so on a Redis Cluster the jobs spread over the
-- masters that own those upstreams' hash tags.
wrk.method = "POST"
wrk.body = string.rep("x", 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
local paths = { "/jobs/a/x", "/jobs/b/x", "/jobs/c/x" }
local n = 0
function request()
  n = n + 1
  return wrk.format(nil, paths[n % 3 + 1])
end
dofile(os.getenv("BENCH_DIR") .. "/lua/report.lua")
