dofile(os.getenv("BENCH_DIR") .. "/lua/report.lua")
