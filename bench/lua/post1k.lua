-- POST a 1 KiB body (WRK_DELAY_MS: see report.lua).
wrk.method = "POST"
wrk.body = string.rep("x", 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
dofile(os.getenv("BENCH_DIR") .. "/lua/report.lua")
