-- POST a 1 MiB body (the response echoes it).
wrk.method = "POST"
wrk.body = string.rep("x", 1024 * 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
dofile(os.getenv("BENCH_DIR") .. "/lua/report.lua")
