#!/usr/bin/env bash
# A/B of two gateway builds on the submission path, in alternating runs
# (the machine drifts too much for two separate runs to compare):
#
#   bench/ab.sh OLD_BINARY NEW_BINARY            # disk store, 5 pairs of 10 s
#   KIND=memory PAIRS=3 DURATION=5s bench/ab.sh A B
#   bench/ab.sh target/release/asyncgate:memory target/release/asyncgate:disk
#   MODE=get bench/ab.sh A B                     # passthrough GET (or MODE=post: 1 KiB)
#   MODE=poll bench/ab.sh A B                    # GET status of finished jobs
#   KIND=memory MODE=memory PAIRS=1 bench/ab.sh A B  # bytes per stored job
#
# A side is a binary, optionally with the store it runs on after a colon
# (`memory`, `disk` or `redis`; KIND, default disk, otherwise). For `redis`
# each run starts a fresh redis-server (no persistence) on 127.0.0.1:18083,
# and the CPU per job of Redis is printed besides the gateway's.
# Each run starts the build on a fresh store, POSTs 1 KiB bodies to an async
# route with `wrk -t2 -c64` for DURATION, then waits until the backend has
# answered every accepted job. It prints, per run and as medians per build:
# 202s per second, jobs completed end to end per second, the 202's p99, and
# the gateway's CPU (all its threads) per completed job. With MODE=get or
# post the load is passthrough instead (to `/`, memory store), with
# MODE=poll GETs of 1000 finished jobs' status at random, and each run
# prints requests per second, p99 and CPU per request. With MODE=memory each
# run stores FILL jobs (default 1,000,000; 1 KiB bodies and results) and
# prints the resident memory they added, per job, beyond the 1 KiB result,
# as `bench/run.sh` counts it. Builds alternate ABBA, so neither always
# runs first. Everything listens on 127.0.0.1 only.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
A=${1:?usage: bench/ab.sh OLD_BINARY NEW_BINARY}
B=${2:?usage: bench/ab.sh OLD_BINARY NEW_BINARY}
KIND=${KIND:-disk}
case "$A" in *:memory | *:disk | *:redis) ;; *) A=$A:$KIND ;; esac
case "$B" in *:memory | *:disk | *:redis) ;; *) B=$B:$KIND ;; esac
PAIRS=${PAIRS:-5}
MODE=${MODE:-jobs}
FILL=${FILL:-1000000}
DURATION=${DURATION:-10s}
export BENCH_DIR
BACKEND=127.0.0.1:18081
GATEWAY=127.0.0.1:18080
REDIS_PORT=18083
HZ=$(getconf CLK_TCK)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

for tool in wrk curl; do
  command -v "$tool" >/dev/null || { echo "bench/ab.sh needs $tool (apt-get install wrk curl)" >&2; exit 1; }
done
(cd "$ROOT" && cargo build --release --quiet --example bench-backend --example bench-fill)
start_backend

# run LABEL BINARY:KIND: one measurement, appended to $WORK/LABEL.
run() {
  local label=$1 bin=${2%:*} kind=${2##*:} config="$WORK/run.toml" pid before t0 t1 c0 c1 line accepted
  local redis=0 r0=0 r1=0
  rm -rf "$WORK/store"
  case "$kind" in
    disk) sed -e "s|^kind = \"memory\"|kind = \"disk\"\npath = \"$WORK/store\"|" "$BENCH_DIR/asyncgate.toml" >"$config" ;;
    redis)
      start_redis "$REDIS_PORT" "$WORK/redis"
      redis=$REDIS_PID
      sed -e "s|^kind = \"memory\"|kind = \"redis\"\nurl = \"redis://127.0.0.1:$REDIS_PORT/0\"|" \
        "$BENCH_DIR/asyncgate.toml" >"$config"
      ;;
    *) cp "$BENCH_DIR/asyncgate.toml" "$config" ;;
  esac
  RUST_LOG=warn "$bin" --config "$config" 2>>"$WORK/gateway.log" &
  pid=$!
  wait_port "$GATEWAY"
  case "$MODE" in
    jobs) ;;
    memory) memory "$label" "$pid"; return ;;
    *) load "$label" "$pid"; return ;;
  esac
  before=$(posts)
  c0=$(ticks "$pid")
  [ "$redis" != 0 ] && r0=$(ticks "$redis")
  t0=$(date +%s.%N)
  line=$(wrk -t2 -c64 -d"$DURATION" -s "$BENCH_DIR/lua/post1k.lua" "http://$GATEWAY/jobs/ab" | grep '^RESULT')
  # requests seconds rps p50 p99 p999 errors
  accepted=$(echo "$line" | awk '{print $2 - $8}')
  while [ "$(posts)" -lt $((before + accepted)) ]; do sleep 0.02; done
  t1=$(date +%s.%N)
  c1=$(ticks "$pid")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  if [ "$redis" != 0 ]; then
    r1=$(ticks "$redis")
    redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' | awk -F'[:=,]' -v n="$accepted" -v l="$label" \
      '$1 == "cmdstat_evalsha" || $1 == "cmdstat_publish" {printf "%s %s %.2f per job\n", l, substr($1, 9), $3 / n}' >&2
    kill "$redis"
    wait "$redis" 2>/dev/null || true
  fi
  echo "$line" | awk -v n="$accepted" -v a="$t0" -v b="$t1" -v dt=$((c1 - c0)) -v rt=$((r1 - r0)) -v hz="$HZ" -v l="$label" \
    '{printf "%s 202/s %.0f  e2e/s %.0f  p99 %.1f ms  cpu %.1f us/job  redis %.1f us/job\n", l, $4, n / (b - a), $6 / 1000, dt * 1e6 / hz / n, rt * 1e6 / hz / n}' |
    tee -a "$WORK/$label" >&2
}

# load LABEL PID: one wrk run of MODE's requests through the running
# gateway PID, which it then stops. For polls, 1000 finished jobs first.
load() {
  local label=$1 pid=$2 script=get.lua c0 c1 line
  case "$MODE" in
    post) script=post1k.lua ;;
    poll)
      script=poll.lua
      finished_jobs "http://$GATEWAY/jobs/ab" "$WORK/status.txt"
      export POLL_URLS=$WORK/status.txt
      ;;
  esac
  c0=$(ticks "$pid")
  line=$(wrk -t2 -c64 -d"$DURATION" -s "$BENCH_DIR/lua/$script" "http://$GATEWAY/" | grep '^RESULT')
  c1=$(ticks "$pid")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  # requests seconds rps p50 p99 p999 errors
  echo "$line" | awk -v dt=$((c1 - c0)) -v hz="$HZ" -v l="$label" \
    '{printf "%s req/s %.0f  p99 %.1f ms  cpu %.2f us/req  errors %d\n", l, $4, $6 / 1000, dt * 1e6 / hz / $2, $8}' |
    tee -a "$WORK/$label" >&2
}

# memory LABEL PID: FILL jobs stored in the running gateway PID, which it
# then stops.
memory() {
  local label=$1 pid=$2 rss0
  rss0=$(rss_kib "$pid")
  fill "$FILL" 64
  awk -v a="$rss0" -v b="$(rss_kib "$pid")" -v n="$FILL" -v l="$label" \
    'BEGIN {printf "%s bytes/job %.0f  rss %d KiB\n", l, (b - a) * 1024 / n - 1024, b}' | tee -a "$WORK/$label" >&2
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

for _ in $(seq "$PAIRS"); do
  run A "$A"
  run B "$B"
  run B "$B"
  run A "$A"
done

echo "medians over $((PAIRS * 2)) runs each (wrk -t2 -c64 -d$DURATION, $MODE):"
for label in A B; do
  side=$A
  [ "$label" = B ] && side=$B
  if [ "$MODE" = memory ]; then
    printf '%s (%s): bytes/job %s\n' "$label" "$side" "$(awk '{print $3}' "$WORK/$label" | median)"
    continue
  fi
  if [ "$MODE" != jobs ]; then
    printf '%s (%s): req/s %s  p99 %s ms  cpu %s us/req\n' "$label" "${side%:*}" \
      "$(awk '{print $3}' "$WORK/$label" | median)" "$(awk '{print $5}' "$WORK/$label" | median)" \
      "$(awk '{print $8}' "$WORK/$label" | median)"
    continue
  fi
  printf '%s (%s): 202/s %s  e2e/s %s  p99 %s ms  cpu %s us/job  redis %s us/job\n' "$label" \
    "$side" "$(awk '{print $3}' "$WORK/$label" | median)" "$(awk '{print $5}' "$WORK/$label" | median)" \
    "$(awk '{print $7}' "$WORK/$label" | median)" "$(awk '{print $10}' "$WORK/$label" | median)" \
    "$(awk '{print $13}' "$WORK/$label" | median)"
done
