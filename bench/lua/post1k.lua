-- POST a 1 KiB body; with WRK_DELAY_MS set, each connection pauses between
-- requests so the offered rate is fixed (connections * 1000 / delay per second).
wrk.method = "POST"
wrk.body = string.rep("x", 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
local pause = tonumber(os.getenv("WRK_DELAY_MS") or "0")
if pause > 0 then
  function delay() return pause end
end
dofile(os.getenv("BENCH_DIR") .. "/lua/report.lua")
