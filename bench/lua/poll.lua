-- GETs random URLs from the file named by POLL_URLS (one path per line).
local paths = {}
for line in io.lines(os.getenv("POLL_URLS")) do paths[#paths + 1] = line end
local n = #paths
function request()
  return wrk.format("GET", paths[math.random(n)])
end
dofile(os.getenv("BENCH_DIR") .. "/lua/report.lua")
