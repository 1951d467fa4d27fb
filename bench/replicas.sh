#!/usr/bin/env bash
# Jobs per second with one and two gateway replicas sharing one Redis, and
# sharing a 3-master Redis Cluster, with the CPU each process spent per job:
#
#   bench/replicas.sh                    # 3 runs of 10 s per row
#   RUNS=1 DURATION=5s bench/replicas.sh
#
# Each run starts the store fresh (no persistence), starts the replicas,
# POSTs 1 KiB bodies to the async routes of three upstreams in turn (on the
# cluster each upstream's jobs live on a master of their own, see
# bench/replicas.toml) with 64 connections in all, split evenly over the
# replicas, then waits until the backend has answered every accepted job.
# It prints the medians per row: 202s per second, jobs completed end to end
# per second, and the CPU (user + system, all threads) per completed job of
# every gateway and every redis-server.
#
# On a machine with few cores, replicas and Redis nodes share the cores
# with each other and with the load generator, so the rates cannot show
# scaling: the CPU per job can. A job costs the gateways G µs and Redis R µs
# in all; on machines of their own, each replica serves 1e6/G' jobs per
# second of a core (G' its share) and each master 1e6/R' (R' its share).
# Everything listens on 127.0.0.1 only.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
export BENCH_DIR
BACKEND=127.0.0.1:18081
GATEWAY_PORTS=(18080 18086)
ADMIN_PORTS=(18090 18091)
REDIS_PORT=18083
CLUSTER_PORTS=(18100 18101 18102)
HZ=$(getconf CLK_TCK)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

for tool in wrk curl redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "bench/replicas.sh needs $tool (apt-get install wrk curl redis-server)" >&2; exit 1; }
done
(cd "$ROOT" && cargo build --release --quiet --bin asyncgate --example bench-backend)
GATEWAY_BIN=$ROOT/target/release/asyncgate
start_backend

# start_store redis|cluster: sets STORE_PIDS, STORE_URL and CLUSTER.
start_store() {
  STORE_PIDS=()
  rm -rf "$WORK"/redis-*
  if [ "$1" = redis ]; then
    start_redis "$REDIS_PORT" "$WORK/redis-$REDIS_PORT"
    STORE_PIDS+=("$REDIS_PID")
    STORE_URL=redis://127.0.0.1:$REDIS_PORT/0
    CLUSTER=false
    return
  fi
  local port nodes=() urls=()
  for port in "${CLUSTER_PORTS[@]}"; do
    start_redis "$port" "$WORK/redis-$port" --cluster-enabled yes --cluster-config-file "$WORK/redis-$port/nodes.conf"
    STORE_PIDS+=("$REDIS_PID")
    nodes+=("127.0.0.1:$port")
    urls+=("redis://127.0.0.1:$port")
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >>"$WORK/redis.log"
  for port in "${CLUSTER_PORTS[@]}"; do
    until redis-cli -p "$port" cluster info | grep -q cluster_state:ok; do sleep 0.05; done
  done
  STORE_URL=$(IFS=,; echo "${urls[*]}")
  CLUSTER=true
}

stop_all() {
  local p
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

# run STORE REPLICAS: one measurement, appended to $WORK/STORE-REPLICAS as
# "202/s e2e/s gateway_us... redis_us...".
run() {
  local store=$1 replicas=$2 i gateways=() loads=() before t0 t1 accepted rps g0=() g1=() s0=() s1=() line
  start_store "$store"
  for i in $(seq 0 $((replicas - 1))); do
    sed -e "s|GATEWAY_PORT|${GATEWAY_PORTS[$i]}|; s|ADMIN_PORT|${ADMIN_PORTS[$i]}|" \
      -e "s|REDIS_URL|$STORE_URL|; s|^cluster = false|cluster = $CLUSTER|" \
      "$BENCH_DIR/replicas.toml" >"$WORK/replica-$i.toml"
    RUST_LOG=warn "$GATEWAY_BIN" --config "$WORK/replica-$i.toml" 2>>"$WORK/gateway.log" &
    gateways+=("$!")
    PIDS+=("$!")
    wait_port "127.0.0.1:${GATEWAY_PORTS[$i]}"
  done
  before=$(posts)
  for i in "${!gateways[@]}"; do g0+=("$(ticks "${gateways[$i]}")"); done
  for i in "${!STORE_PIDS[@]}"; do s0+=("$(ticks "${STORE_PIDS[$i]}")"); done
  t0=$(date +%s.%N)
  for i in "${!gateways[@]}"; do
    wrk -t$((2 / replicas)) -c$((64 / replicas)) -d"$DURATION" -s "$BENCH_DIR/lua/post1k-spread.lua" \
      "http://127.0.0.1:${GATEWAY_PORTS[$i]}/" | grep '^RESULT' >"$WORK/wrk-$i" &
    loads+=("$!")
  done
  wait "${loads[@]}"
  # requests seconds rps p50 p99 p999 errors
  accepted=$(cat "$WORK"/wrk-* | awk '{s += $2 - $8} END {print s}')
  rps=$(cat "$WORK"/wrk-* | awk '{s += $4} END {print s}')
  rm -f "$WORK"/wrk-*
  for _ in $(seq 6000); do
    [ "$(posts)" -ge $((before + accepted)) ] && break
    sleep 0.02
  done
  t1=$(date +%s.%N)
  for i in "${!gateways[@]}"; do g1+=("$(ticks "${gateways[$i]}")"); done
  for i in "${!STORE_PIDS[@]}"; do s1+=("$(ticks "${STORE_PIDS[$i]}")"); done
  line=$(awk -v r="$rps" -v n="$accepted" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f %.0f", r, n / (b - a)}')
  for i in "${!gateways[@]}"; do
    line+=" $(awk -v d=$((g1[i] - g0[i])) -v n="$accepted" -v hz="$HZ" 'BEGIN {printf "%.1f", d * 1e6 / hz / n}')"
  done
  for i in "${!STORE_PIDS[@]}"; do
    line+=" $(awk -v d=$((s1[i] - s0[i])) -v n="$accepted" -v hz="$HZ" 'BEGIN {printf "%.1f", d * 1e6 / hz / n}')"
  done
  echo "$store, $replicas replica(s): $line" >&2
  echo "$line" >>"$WORK/rows-$store-$replicas"
  stop_all "${gateways[@]}"
  stop_all "${STORE_PIDS[@]}"
}

# medians FILE: the median of each column of FILE.
medians() {
  local col out=()
  for col in $(seq "$(head -1 "$1" | wc -w)"); do out+=("$(awk -v c="$col" '{print $c}' "$1" | median)"); done
  echo "${out[*]}"
}

for _ in $(seq "$RUNS"); do
  for store in redis cluster; do
    for replicas in 1 2; do run "$store" "$replicas"; done
  done
done

echo
echo "medians of $RUNS runs of ${DURATION} each, 64 connections in all, 1 KiB jobs over 3 upstreams;"
echo "CPU in µs per completed job (user + system, all threads of the process)"
echo
echo "| store | replicas | 202/s | jobs/s end to end | CPU per gateway | CPU per Redis node | CPU per job, all processes |"
echo "|---|---|---|---|---|---|---|"
for store in redis cluster; do
  for replicas in 1 2; do
    medians "$WORK/rows-$store-$replicas" | awk -v s="$store" -v r="$replicas" '{
      g = ""; n = ""; t = 0
      for (i = 3; i <= NF; i++) { t += $i; if (i < 3 + r) g = g (g == "" ? "" : " / ") $i; else n = n (n == "" ? "" : " / ") $i }
      printf "| %s | %d | %s | %s | %s | %s | %.1f |\n", (s == "redis" ? "one Redis" : "3-master cluster"), r, $1, $2, g, n, t }'
  done
done
