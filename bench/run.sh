#!/usr/bin/env bash
# asyncgate benchmark: the bare backend, nginx and asyncgate under the same
# wrk load on this machine, reported as medians and ratios.
#
#   bench/run.sh                       # full run, about twenty minutes
#   RUNS=1 DURATION=3s FILL=100000 bench/run.sh   # a quick look
#
# Knobs (environment): RUNS (repeats per measurement, median reported),
# DURATION (wrk -d), CONNS (wrk -c), THREADS (wrk -t), FILL (jobs stored for
# the large memory point), RESULTS (where the markdown goes; default
# bench/results/DATE/TIME.md, so a run never overwrites the committed
# bench/RESULTS.md unless told to: RESULTS=bench/RESULTS.md), PASSTHROUGH_ONLY=1 (stop after the passthrough section,
# a few minutes). Everything listens on 127.0.0.1 only.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
FILL=${FILL:-1000000}
RESULTS=${RESULTS:-$BENCH_DIR/results/$(date -u +%Y-%m-%d)/$(date -u +%H%M).md}
mkdir -p "$(dirname "$RESULTS")"
export BENCH_DIR

BACKEND=127.0.0.1:18081
NGINX=127.0.0.1:18082
# The same nginx with its access log on, buffered.
NGINX_LOGGED=127.0.0.1:18084
# The same nginx speaking HTTP/2 in clear text.
NGINX_H2=127.0.0.1:18085
GATEWAY=127.0.0.1:18080
REDIS_PORT=18083
HZ=$(getconf CLK_TCK)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
if ! need wrk || ! need nginx || ! need curl || ! need redis-server || ! need h2load; then
  echo "installing wrk, nginx-light, curl, redis-server and h2load from the distribution..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light curl redis-server nghttp2-client >/dev/null
fi
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)

echo "building release binaries..." >&2
(cd "$ROOT" && cargo build --release --quiet --bin asyncgate --example bench-backend --example bench-fill)
GATEWAY_BIN=$ROOT/target/release/asyncgate
BACKEND_BIN=$ROOT/target/release/examples/bench-backend
FILL_BIN=$ROOT/target/release/examples/bench-fill

for addr in "$BACKEND" "$NGINX" "$NGINX_LOGGED" "$NGINX_H2" "$GATEWAY" "127.0.0.1:$REDIS_PORT"; do
  if (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null; then
    echo "$addr is already in use: stop whatever listens there first" >&2
    exit 1
  fi
done

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
WORK=$(mktemp -d)
mkdir -p "$WORK/tmp"
# nginx's workers drop root for an unprivileged user, who must reach the
# directory it buffers request bodies in.
chmod 711 "$WORK"
chmod 1777 "$WORK/tmp"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  # nginx removes its pid file as it exits: it may be gone by now.
  local pid
  if pid=$(cat "$WORK/nginx.pid" 2>/dev/null); then kill "$pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# start_gateway CONFIG [LOG_LEVEL]: warn (no request log) unless told.
start_gateway() {
  local config=$1 level=${2:-warn}
  if [ -n "${GATEWAY_PID:-}" ]; then kill "$GATEWAY_PID"; wait "$GATEWAY_PID" 2>/dev/null || true; fi
  RUST_LOG=$level "$GATEWAY_BIN" --config "$config" 2>>"$WORK/gateway.log" &
  GATEWAY_PID=$!
  PIDS+=("$GATEWAY_PID")
  wait_port "$GATEWAY"
}

"$BACKEND_BIN" "$BACKEND" &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
"$NGINX_BIN" -p "$WORK" -c "$BENCH_DIR/nginx.conf" -g "daemon off;" 2>>"$WORK/nginx.log" &
PIDS+=("$!")
start_gateway "$BENCH_DIR/asyncgate.toml"
wait_port "$BACKEND"
wait_port "$NGINX"
wait_port "$NGINX_LOGGED"
NGINX_PIDS() { pgrep -f "nginx: worker process" | tr '\n' ' '; }


# measure NAME URL SCRIPT "PIDS" [extra wrk args]: RUNS wrk runs; prints
# "NAME rps p50 p99 p999 cpu_us_per_req" (medians) and records it.
declare -A R
measure() {
  local name=$1 url=$2 script=$3 pids=$4; shift 4
  : >"$WORK/$name.runs"
  for _ in $(seq "$RUNS"); do
    measure_once "$name" "$url" "$script" "$pids" "$@"
  done
  report "$name"
}

# measure_once NAME URL SCRIPT "PIDS" [extra wrk args]: one wrk run,
# appended to NAME's runs.
measure_once() {
  local name=$1 url=$2 script=$3 pids=$4; shift 4
  local t0 t1 line
  t0=$(ticks $pids)
  line=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$BENCH_DIR/lua/$script" "$@" "$url" | grep '^RESULT')
  t1=$(ticks $pids)
  # requests seconds rps p50 p99 p999 errors cpu_us/req
  echo "$line" | awk -v dt=$((t1 - t0)) -v hz="$HZ" '{printf "%s %s %s %s %s %s %s %.2f\n", $2, $3, $4, $5, $6, $7, $8, dt * 1e6 / hz / $2}' >>"$WORK/$name.runs"
}

# report NAME: summarizes NAME's runs and prints the medians.
report() {
  local name=$1
  summarize "$name"
  printf '%-22s %10.0f req/s  p50 %6d us  p99 %6d us  p99.9 %6d us  cpu %6.2f us/req  errors %d\n' \
    "$name" "${R[$name,3]}" "${R[$name,4]}" "${R[$name,5]}" "${R[$name,6]}" "${R[$name,8]}" "${R[$name,err]}" >&2
}

# summarize NAME: the medians and totals of NAME's runs, into R.
summarize() {
  local name=$1 out="$WORK/$1.runs" col
  for col in 3 4 5 6 8; do
    R[$name,$col]=$(awk -v c=$col '{print $c}' "$out" | median)
  done
  R[$name,req]=$(awk '{s += $1} END {print s}' "$out")
  R[$name,err]=$(awk '{s += $7} END {print s}' "$out")
}

# measure_h2 NAME URL "PIDS": like measure, with h2load over HTTP/2 in
# clear text (CONNS connections, 10 streams each); h2load reports no
# percentiles, so the latency columns hold its mean.
measure_h2() {
  local name=$1 url=$2 pids=$3
  local out="$WORK/$name.runs"
  : >"$out"
  for _ in $(seq "$RUNS"); do
    local t0 t1 report
    t0=$(ticks $pids)
    report=$(h2load -D "${DURATION%s}" -c "$CONNS" -m 10 -t "$THREADS" "$url" 2>&1)
    t1=$(ticks $pids)
    echo "$report" | awk -v dt=$((t1 - t0)) -v hz="$HZ" '
      /^finished in/ {rps = $4 + 0}
      /^requests:/ {done = $8; failed = $10 + $12 + $14}
      /^time for request:/ {mean = $6}
      END {
        us = mean; sub(/us$/, "", us); if (mean ~ /ms$/) {sub(/ms$/, "", us); us *= 1000}
        printf "%d 0 %s %d %d %d %d %.2f\n", done, rps, us, us, us, failed, dt * 1e6 / hz / done
      }' >>"$out"
  done
  summarize "$name"
  printf '%-22s %10.0f req/s  mean %6d us  cpu %6.2f us/req  errors %d\n' \
    "$name" "${R[$name,3]}" "${R[$name,4]}" "${R[$name,8]}" "${R[$name,err]}" >&2
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0) ? a / b : 0}'; }

# submit_e2e NAME URL "PIDS": measures 202s as NAME, then waits until the
# backend has answered every accepted job; sets RATE to completed jobs per
# second (not printed: measure's figures must stay in this shell).
submit_e2e() {
  local name=$1 url=$2 pids=$3 before t_start t_end accepted
  before=$(posts)
  t_start=$(date +%s.%N)
  measure "$name" "$url" post1k.lua "$pids"
  accepted=$((R[$name,req] - R[$name,err]))
  while [ "$(posts)" -lt $((before + accepted)) ]; do sleep 0.05; done
  t_end=$(date +%s.%N)
  echo "$name: $accepted jobs completed end to end in $(awk -v a="$t_start" -v b="$t_end" 'BEGIN {printf "%.1f", b - a}')s" >&2
  RATE=$(awk -v n="$accepted" -v a="$t_start" -v b="$t_end" 'BEGIN {printf "%.0f", n / (b - a)}')
}

# half_rate_delay RATE: the pause per connection (ms) that offers half of
# RATE requests per second over CONNS connections.
half_rate_delay() {
  awk -v c="$CONNS" -v r="$1" 'BEGIN {d = int(c * 1000 / (r / 2) + 0.5); print (d < 1) ? 1 : d}'
}

# answers_post URL BYTES: fails the run unless URL answers a POST of BYTES
# with 200, so a target that refuses the load cannot pass for a fast one.
answers_post() {
  local code
  code=$(head -c "$2" /dev/zero | tr '\0' x | curl -s -o /dev/null -w '%{http_code}' --data-binary @- "$1")
  if [ "$code" != 200 ]; then
    echo "$1 answered a $2-byte POST with $code, not 200; see $WORK/*.log" >&2
    cp "$WORK"/*.log /tmp/ 2>/dev/null || true
    exit 1
  fi
}
for url in "http://$NGINX/echo" "http://$GATEWAY/echo" "http://$GATEWAY/unbuffered/echo"; do
  answers_post "$url" 1024
  answers_post "$url" 1048576
done

echo "== passthrough (wrk -t$THREADS -c$CONNS -d$DURATION, $RUNS runs, medians)" >&2
measure backend_get "http://$BACKEND/" get.lua "$BACKEND_PID"
measure nginx_get "http://$NGINX/" get.lua "$(NGINX_PIDS)"
measure gateway_get "http://$GATEWAY/" get.lua "$GATEWAY_PID"
measure nginx_post "http://$NGINX/echo" post1k.lua "$(NGINX_PIDS)"
measure gateway_post "http://$GATEWAY/echo" post1k.lua "$GATEWAY_PID"
measure gateway_post_streamed "http://$GATEWAY/unbuffered/echo" post1k.lua "$GATEWAY_PID"
measure nginx_post1m "http://$NGINX/echo" post1m.lua "$(NGINX_PIDS)"
measure gateway_post1m "http://$GATEWAY/echo" post1m.lua "$GATEWAY_PID"
measure gateway_post1m_streamed "http://$GATEWAY/unbuffered/echo" post1m.lua "$GATEWAY_PID"
measure_h2 nginx_get_h2 "http://$NGINX_H2/" "$(NGINX_PIDS)"
measure_h2 gateway_get_h2 "http://$GATEWAY/" "$GATEWAY_PID"
# With the log on: the gateway at its default level (a line per request),
# nginx with a buffered access log; both write a file in $WORK. What the
# log costs is a difference of a few microseconds, smaller than the
# machine's drift over the minutes between the runs above: so each is
# measured beside its run without the log, alternately.
: >"$WORK/nginx_get_quiet.runs"
: >"$WORK/nginx_get_logged.runs"
: >"$WORK/gateway_get_quiet.runs"
: >"$WORK/gateway_get_logged.runs"
for _ in $(seq "$RUNS"); do
  measure_once nginx_get_quiet "http://$NGINX/" get.lua "$(NGINX_PIDS)"
  measure_once nginx_get_logged "http://$NGINX_LOGGED/" get.lua "$(NGINX_PIDS)"
  start_gateway "$BENCH_DIR/asyncgate.toml"
  measure_once gateway_get_quiet "http://$GATEWAY/" get.lua "$GATEWAY_PID"
  start_gateway "$BENCH_DIR/asyncgate.toml" info
  measure_once gateway_get_logged "http://$GATEWAY/" get.lua "$GATEWAY_PID"
done
for name in nginx_get_quiet nginx_get_logged gateway_get_quiet gateway_get_logged; do report "$name"; done
start_gateway "$BENCH_DIR/asyncgate.toml"

CPU=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
MEMTOTAL=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
row() { printf '| %s | %.0f | %s | %s | %s | %.2f |\n' "$1" "${R[$2,3]}" "${R[$2,4]}" "${R[$2,5]}" "${R[$2,6]}" "${R[$2,8]}"; }
passthrough_report() {
  echo "# Benchmark results"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- machine: $(nproc) cores ($CPU), $MEMTOTAL; load generator, backend and proxies share it"
  echo "- command: \`RUNS=$RUNS DURATION=$DURATION CONNS=$CONNS THREADS=$THREADS FILL=$FILL ${PASSTHROUGH_ONLY:+PASSTHROUGH_ONLY=1 }bench/run.sh\`"
  echo "- each figure is the median of $RUNS wrk runs (\`wrk -t$THREADS -c$CONNS -d$DURATION\`); latencies in µs;"
  echo "  CPU is the proxy's own user+system time per request, from /proc/PID/stat"
  echo
  echo "## Passthrough"
  echo
  echo "Request bodies are received whole before the backend is contacted, by"
  echo "nginx (its default) and by the gateway (\`request_buffering\`, its"
  echo "default); \"streamed\" rows are the gateway with \`request_buffering = false\`."
  echo
  echo "| target | req/s | p50 | p99 | p99.9 | CPU µs/req |"
  echo "|---|---|---|---|---|---|"
  row "backend direct, GET" backend_get
  row "nginx, GET" nginx_get
  row "asyncgate, GET" gateway_get
  row "nginx, POST 1 KiB" nginx_post
  row "asyncgate, POST 1 KiB" gateway_post
  row "asyncgate, POST 1 KiB, streamed" gateway_post_streamed
  row "nginx, POST 1 MiB" nginx_post1m
  row "asyncgate, POST 1 MiB" gateway_post1m
  row "asyncgate, POST 1 MiB, streamed" gateway_post1m_streamed
  row "nginx, GET, HTTP/2 (h2load, mean latency)" nginx_get_h2
  row "asyncgate, GET, HTTP/2 (h2load, mean latency)" gateway_get_h2
  row "nginx, GET, access log off, beside the next row" nginx_get_quiet
  row "nginx, GET, access log on (buffered)" nginx_get_logged
  row "asyncgate, GET, no request log, beside the next row" gateway_get_quiet
  row "asyncgate, GET, request log on (default level)" gateway_get_logged
  echo
  echo "| ratio asyncgate / nginx | GET | POST 1 KiB | POST 1 KiB streamed | POST 1 MiB | POST 1 MiB streamed | GET, HTTP/2 |"
  echo "|---|---|---|---|---|---|---|"
  for m in "throughput 3" "CPU per request 8" "p99 (HTTP/2: mean) 5"; do
    local c=${m##* } label=${m% *}
    echo "| $label | $(ratio "${R[gateway_get,$c]}" "${R[nginx_get,$c]}") | $(ratio "${R[gateway_post,$c]}" "${R[nginx_post,$c]}") |" \
      "$(ratio "${R[gateway_post_streamed,$c]}" "${R[nginx_post,$c]}") | $(ratio "${R[gateway_post1m,$c]}" "${R[nginx_post1m,$c]}") |" \
      "$(ratio "${R[gateway_post1m_streamed,$c]}" "${R[nginx_post1m,$c]}") | $(ratio "${R[gateway_get_h2,$c]}" "${R[nginx_get_h2,$c]}") |"
  done
  echo
  echo "With the log on, asyncgate / nginx: throughput $(ratio "${R[gateway_get_logged,3]}" "${R[nginx_get_logged,3]}"),"
  echo "CPU per request $(ratio "${R[gateway_get_logged,8]}" "${R[nginx_get_logged,8]}"). What the log adds to the CPU per"
  echo "request, against the same server without it in alternate runs: asyncgate $(awk -v a="${R[gateway_get_logged,8]}" -v b="${R[gateway_get_quiet,8]}" 'BEGIN {printf "%.2f µs (%.0f %%)", a - b, (a - b) * 100 / b}'),"
  echo "nginx $(awk -v a="${R[nginx_get_logged,8]}" -v b="${R[nginx_get_quiet,8]}" 'BEGIN {printf "%.2f µs (%.0f %%)", a - b, (a - b) * 100 / b}')."
}
if [ -n "${PASSTHROUGH_ONLY:-}" ]; then
  passthrough_report >"$RESULTS"
  echo "written to $RESULTS" >&2
  cat "$RESULTS"
  exit 0
fi

echo "== submit" >&2
start_gateway "$BENCH_DIR/asyncgate.toml"
submit_e2e submit "http://$GATEWAY/jobs/x" "$GATEWAY_PID"
E2E=$RATE
# Half the maximum rate, offered by pausing each connection between requests.
delay_ms=$(half_rate_delay "${R[submit,3]}")
WRK_DELAY_MS=$delay_ms measure submit_half "http://$GATEWAY/jobs/x" post1k.lua "$GATEWAY_PID"

echo "== poll" >&2
finished_jobs "http://$GATEWAY/jobs/p" "$WORK/status.txt"
sed 's|$|/result|' "$WORK/status.txt" >"$WORK/result.txt"
POLL_URLS=$WORK/status.txt measure poll_status "http://$GATEWAY" poll.lua "$GATEWAY_PID"
POLL_URLS=$WORK/result.txt measure poll_result "http://$GATEWAY" poll.lua "$GATEWAY_PID"

echo "== redis store (the same gateway, its jobs in a local redis-server)" >&2
start_redis "$REDIS_PORT" "$WORK/redis"
sed -e "s|^kind = \"memory\"|kind = \"redis\"\nurl = \"redis://127.0.0.1:$REDIS_PORT/0\"|" \
  "$BENCH_DIR/asyncgate.toml" >"$WORK/redis.toml"
start_gateway "$WORK/redis.toml"
# CPU per request counts the gateway and Redis together.
submit_e2e redis_submit "http://$GATEWAY/jobs/r" "$GATEWAY_PID $REDIS_PID"
REDIS_E2E=$RATE
finished_jobs "http://$GATEWAY/jobs/rp" "$WORK/redis-status.txt"
POLL_URLS=$WORK/redis-status.txt measure redis_poll "http://$GATEWAY" poll.lua "$GATEWAY_PID $REDIS_PID"
kill "$REDIS_PID" 2>/dev/null || true

echo "== disk store (the same gateway, its jobs in fjall under $WORK/disk)" >&2
sed -e "s|^kind = \"memory\"|kind = \"disk\"\npath = \"$WORK/disk\"|" \
  "$BENCH_DIR/asyncgate.toml" >"$WORK/disk.toml"
start_gateway "$WORK/disk.toml"
submit_e2e disk_submit "http://$GATEWAY/jobs/d" "$GATEWAY_PID"
DISK_E2E=$RATE
# Half the disk store's own maximum rate.
disk_delay_ms=$(half_rate_delay "${R[disk_submit,3]}")
WRK_DELAY_MS=$disk_delay_ms measure disk_submit_half "http://$GATEWAY/jobs/d" post1k.lua "$GATEWAY_PID"
finished_jobs "http://$GATEWAY/jobs/dp" "$WORK/disk-status.txt"
POLL_URLS=$WORK/disk-status.txt measure disk_poll "http://$GATEWAY" poll.lua "$GATEWAY_PID"

echo "== memory" >&2
start_gateway "$BENCH_DIR/asyncgate.toml"
declare -A MEM
MEM[0]=$(rss_kib "$GATEWAY_PID")
stored=0
# The memory points: 10,000, 100,000 and FILL, none past FILL, each once.
MEM_POINTS=$(printf '%s\n' 10000 100000 "$FILL" | awk -v f="$FILL" '$1 <= f' | sort -nu)
for n in $MEM_POINTS; do
  fill $((n - stored)) "$CONNS"
  stored=$n
  MEM[$n]=$(rss_kib "$GATEWAY_PID")
  echo "RSS with $n jobs stored: ${MEM[$n]} KiB" >&2
done
per_job() { awk -v a="${MEM[0]}" -v b="${MEM[$1]}" -v n="$1" 'BEGIN {printf "%.0f", (b - a) * 1024 / n - 1024}'; }

echo "== disk store at scale ($FILL jobs, then 2 GiB of 1 MiB results)" >&2
sed -e "s|^kind = \"memory\"|kind = \"disk\"\npath = \"$WORK/disk-scale\"|" \
  -e 's/^max_bytes = .*/max_bytes = "64GiB"/' "$BENCH_DIR/asyncgate.toml" >"$WORK/disk-scale.toml"
start_gateway "$WORK/disk-scale.toml"
DISK_RSS0=$(rss_kib "$GATEWAY_PID")
fill "$FILL" "$CONNS"
DISK_RSS=$(rss_kib "$GATEWAY_PID")
DISK_BYTES=$(du -sb "$WORK/disk-scale" | awk '{print $1}')
echo "disk store, $FILL jobs: RSS $DISK_RSS KiB, $DISK_BYTES bytes on disk" >&2
# A crash, then the time until the gateway answers again (recovery runs
# before it listens).
kill -9 "$GATEWAY_PID"; wait "$GATEWAY_PID" 2>/dev/null || true; GATEWAY_PID=
t0=$(date +%s.%N)
start_gateway "$WORK/disk-scale.toml"
DISK_RESTART=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
echo "restart with $FILL jobs stored: answering after ${DISK_RESTART}s" >&2
before=$(posts)
large=$("$FILL_BIN" "http://$GATEWAY/jobs/large" 2048 8 1048576 | awk '{print $2}')
while [ "$(posts)" -lt $((before + large)) ]; do sleep 0.1; done
sleep 1
DISK_LARGE_RSS=$(rss_kib "$GATEWAY_PID")
echo "RSS with $large results of 1 MiB stored besides: $DISK_LARGE_RSS KiB" >&2

echo "== budget holds (max_bytes = 256MiB, $FILL submissions)" >&2
sed 's/^max_bytes = .*/max_bytes = "256MiB"/' "$BENCH_DIR/asyncgate.toml" >"$WORK/budget.toml"
start_gateway "$WORK/budget.toml"
BUDGET_FILL=$("$FILL_BIN" "http://$GATEWAY/jobs/b" "$FILL" "$CONNS")
echo "$BUDGET_FILL (accepted, refused with 503, other, seconds)" >&2
sleep 1
BUDGET_RSS=$(rss_kib "$GATEWAY_PID")
echo "RSS after $FILL submissions against a 256 MiB budget: $BUDGET_RSS KiB" >&2

echo "== scaling (submit rate by concurrent clients)" >&2
for c in 10 100 1000 10000; do
  start_gateway "$BENCH_DIR/asyncgate.toml"
  CONNS=$c measure "scale_$c" "http://$GATEWAY/jobs/s" post1k.lua "$GATEWAY_PID"
  R[scale_$c,rss]=$(rss_kib "$GATEWAY_PID")
done

{
  passthrough_report
  echo
  echo "## Async jobs"
  echo
  echo "| measurement | req/s | p50 | p99 | p99.9 | CPU µs/req |"
  echo "|---|---|---|---|---|---|"
  row "submit (202), full load" submit
  row "submit (202), half load (${delay_ms} ms pause per connection)" submit_half
  row "GET status of a finished job" poll_status
  row "GET result of a finished job" poll_result
  echo
  echo "- jobs completed end to end (202 + backend request + stored result): **$E2E jobs/s**," \
    "$(ratio "$E2E" "${R[nginx_post,3]}") × nginx's POST passthrough rate"
  echo "- poll status: $(ratio "${R[poll_status,3]}" "${R[backend_get,3]}") × the bare backend's GET rate;" \
    "result: $(ratio "${R[poll_result,3]}" "${R[backend_get,3]}") ×"
  echo
  echo "## Async jobs with the Redis store"
  echo
  echo "One gateway, its jobs in a local \`redis-server\` (no persistence). CPU per request counts the gateway and Redis together."
  echo
  echo "| measurement | req/s | p50 | p99 | p99.9 | CPU µs/req |"
  echo "|---|---|---|---|---|---|"
  row "submit (202), full load" redis_submit
  row "GET status of a finished job" redis_poll
  echo
  echo "- jobs completed end to end: **$REDIS_E2E jobs/s**, $(ratio "$REDIS_E2E" "$E2E") × the memory store's rate"
  echo
  echo "## Async jobs with the disk store (the default)"
  echo
  echo "Every job is committed (fsync) before its \`202\`; concurrent submissions share a commit."
  echo
  echo "| measurement | req/s | p50 | p99 | p99.9 | CPU µs/req |"
  echo "|---|---|---|---|---|---|"
  row "submit (202), full load" disk_submit
  row "submit (202), half its maximum rate (${disk_delay_ms} ms pause per connection)" disk_submit_half
  row "GET status of a finished job" disk_poll
  echo
  echo "- \`202\`s per second: $(ratio "${R[disk_submit,3]}" "${R[submit,3]}") × the memory store's rate"
  echo "- jobs completed end to end: **$DISK_E2E jobs/s**, $(ratio "$DISK_E2E" "$E2E") × the memory store's rate"
  echo "- $FILL jobs stored (1 KiB requests and results): RSS $(awk -v k="$DISK_RSS" 'BEGIN {printf "%.1f", k / 1024}') MiB" \
    "(from $(awk -v k="$DISK_RSS0" 'BEGIN {printf "%.1f", k / 1024}') MiB empty)," \
    "$(awk -v b="$DISK_BYTES" -v n="$FILL" 'BEGIN {printf "%.0f", b / n}') bytes on disk per job"
  echo "- restart after \`kill -9\` with them stored: answering again after ${DISK_RESTART} s"
  echo "- with 2 GiB of 1 MiB results stored besides: RSS $(awk -v k="$DISK_LARGE_RSS" 'BEGIN {printf "%.1f", k / 1024}') MiB" \
    "(the cache's bound: 64 MiB)"
  echo
  echo "## Memory (1 KiB request bodies, 1 KiB results)"
  echo
  echo "| jobs stored | RSS (MiB) | bytes per job beyond its 1 KiB result |"
  echo "|---|---|---|"
  echo "| 0 | $(awk -v k="${MEM[0]}" 'BEGIN {printf "%.1f", k / 1024}') | |"
  for n in $MEM_POINTS; do
    [ -n "${MEM[$n]:-}" ] && echo "| $n | $(awk -v k="${MEM[$n]}" 'BEGIN {printf "%.1f", k / 1024}') | $(per_job "$n") |"
  done
  echo
  echo "With \`max_bytes = \"256MiB\"\` and $FILL submissions ($(echo "$BUDGET_FILL" | awk '{print $2 " accepted, " $3 " refused with 503, " $4 " other"}')), RSS stayed at" \
    "$(awk -v k="$BUDGET_RSS" 'BEGIN {printf "%.1f", k / 1024}') MiB."
  echo
  echo "## Scaling: submit rate by concurrent clients"
  echo
  echo "| clients | 202/s | p50 | p99 | p99.9 | CPU µs/req | RSS after (MiB) |"
  echo "|---|---|---|---|---|---|---|"
  for c in 10 100 1000 10000; do
    printf '| %s | %.0f | %s | %s | %s | %.2f | %.1f |\n' "$c" "${R[scale_$c,3]}" "${R[scale_$c,4]}" "${R[scale_$c,5]}" \
      "${R[scale_$c,6]}" "${R[scale_$c,8]}" "$(awk -v k="${R[scale_$c,rss]}" 'BEGIN {print k / 1024}')"
  done
} >"$RESULTS"
echo "written to $RESULTS" >&2
cat "$RESULTS"
