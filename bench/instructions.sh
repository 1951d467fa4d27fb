#!/usr/bin/env bash
# Instructions per job, counted by callgrind: unlike CPU time they do not
# drift with this shared machine, so a difference of 1% between two builds
# or two configs is a difference of the code. Each side runs the gateway
# under callgrind twice, idle and with JOBS jobs (1 KiB bodies and
# results, bench-fill over 8 connections) through the async route of
# bench/asyncgate.toml, and prints (Ir with jobs - Ir idle) / JOBS: the
# instructions of submitting, running and storing one job, start-up left
# out. At ~3 instructions per ns on this machine, 2 µs is ~6,000.
#
#   bench/instructions.sh SIDE...
#   bench/instructions.sh old/asyncgate target/release/asyncgate
#   bench/instructions.sh 'target/release/asyncgate:disk' \
#       'target/release/asyncgate:disk:rate = "1000000/s"'
#
# With MODE=post the requests are passthrough POSTs of 1 KiB to the
# default upstream instead, and the figure is instructions per request.
#
# A side is BINARY[:KIND[:TOML]]: KIND is the store (memory, the default,
# or disk), TOML a `key = value` line for the upstream's table, replacing
# the key's line there if it has one (`fair = false`, `rate = "1000000/s"`,
# `max_concurrency = 1` so that every job waits its turn), or a section
# of its own, appended, when it starts with `[` (`\n` between its lines:
# `'[tracing]\notlp_endpoint = "http://127.0.0.1:4318"'`). JOBS (default 5000) sets the count. Needs valgrind;
# everything listens on 127.0.0.1 only. RUST_LOG (default warn) is the
# gateway's: RUST_LOG=info counts the request log too.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
JOBS=${JOBS:-5000}
MODE=${MODE:-jobs}
BACKEND=127.0.0.1:18081
GATEWAY=127.0.0.1:18080
[ $# -ge 1 ] || { echo "usage: bench/instructions.sh BINARY[:KIND[:TOML]]..." >&2; exit 1; }
for tool in valgrind curl; do
  command -v "$tool" >/dev/null || { echo "bench/instructions.sh needs $tool (apt-get install $tool)" >&2; exit 1; }
done
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

start_backend

# irs BINARY KIND TOML JOBS: the instructions the gateway ran in all.
irs() {
  local bin=$1 kind=$2 extra=$3 jobs=$4 config="$WORK/run.toml" pid
  local section=""
  rm -rf "$WORK/store" "$WORK"/cg.*
  if [[ $extra == \[* ]]; then section=$(printf '%b' "$extra"); extra=""; fi
  {
  case "$kind" in
    disk) sed -e "s|^kind = \"memory\"|kind = \"disk\"\npath = \"$WORK/store\"|" "$BENCH_DIR/asyncgate.toml" ;;
    *) cat "$BENCH_DIR/asyncgate.toml" ;;
  esac | awk -v extra="$extra" '
    BEGIN { key = extra; sub(/ *=.*/, "", key) }
    key != "" && index($0, key " = ") == 1 { print extra; done = 1; next }
    /^max_queue = 2000000/ { print; if (key != "" && !done) print extra; next }
    { print }'
  printf '%s\n' "$section"
  } >"$config"
  RUST_LOG=${RUST_LOG:-warn} valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" \
    "$bin" --config "$config" 2>>"$WORK/gateway.log" &
  pid=$!
  for _ in $(seq 600); do curl -s -o /dev/null "http://$GATEWAY/" && break; sleep 0.1; done
  if [ "$jobs" -gt 0 ] && [ "$MODE" = post ]; then
    "$ROOT/target/release/examples/bench-fill" "http://$GATEWAY/echo" "$jobs" 8 >/dev/null
  elif [ "$jobs" -gt 0 ]; then
    fill "$jobs" 8 >/dev/null
  fi
  kill -TERM "$pid"
  wait "$pid" || true
  awk '/^(summary|totals):/ {print $2; exit}' "$WORK"/cg.*
}

printf '| side | instructions per %s |\n|---|---|\n' "$([ "$MODE" = post ] && echo request || echo job)"
for side in "$@"; do
  IFS=: read -r bin kind extra <<<"$side"
  kind=${kind:-memory}
  idle=$(irs "$bin" "$kind" "$extra" 0)
  busy=$(irs "$bin" "$kind" "$extra" "$JOBS")
  printf '| `%s` | %s |\n' "$side" "$(( (busy - idle) / JOBS ))"
done
