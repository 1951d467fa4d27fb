# Helpers the benchmark scripts share; sourced, not run. BACKEND is the
# benchmark backend's address.

# wait_port ADDR: until something answers HTTP on ADDR (10 s at most).
wait_port() {
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://$1/" && return 0
    sleep 0.1
  done
  echo "nothing answers on $1" >&2
  exit 1
}

# CPU ticks (user + system) of the given pids, all their threads.
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }

# How many POSTs the benchmark backend has answered.
posts() { curl -s "http://$BACKEND/stats"; }

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# fill N CONNS: submits N more jobs (1 KiB bodies and results) to the
# gateway on GATEWAY over CONNS connections, and waits until the backend
# has answered every accepted one.
fill() {
  local n=$1 conns=$2 before ok
  before=$(posts)
  ok=$("$ROOT/target/release/examples/bench-fill" "http://$GATEWAY/jobs/m" "$n" "$conns" | awk '{print $2}')
  while [ "$(posts)" -lt $((before + ok)) ]; do sleep 0.1; done
  sleep 1 # the last results are recorded just after the backend answers
}

# finished_jobs URL FILE: submits 1000 jobs (1 KiB bodies), writes their
# status paths (the absolute Location's path) to FILE and waits until the
# last has finished.
finished_jobs() {
  : >"$2"
  for _ in $(seq 1000); do
    curl -s -D - -o /dev/null -X POST --data-binary @<(head -c 1024 /dev/zero | tr '\0' x) "$1" |
      awk 'tolower($1) == "location:" {sub(/\r$/, "", $2); sub(/^https?:\/\/[^\/]*/, "", $2); print $2}' >>"$2"
  done
  while [ "$(curl -s "http://$GATEWAY$(tail -n1 "$2")" | grep -c succeeded)" -eq 0 ]; do sleep 0.05; done
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# start_backend: a scratch directory in WORK, the benchmark backend on
# BACKEND, and a trap that stops everything in PIDS and removes WORK.
start_backend() {
  ulimit -n 65536 2>/dev/null || true
  WORK=$(mktemp -d)
  PIDS=()
  trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
  "$ROOT/target/release/examples/bench-backend" "$BACKEND" &
  PIDS+=("$!")
  wait_port "$BACKEND"
}

# start_redis PORT DIR [ARGS...]: a redis-server on 127.0.0.1:PORT without
# persistence, its files in DIR; sets REDIS_PID (also in PIDS) once it answers.
start_redis() {
  local port=$1 dir=$2
  shift 2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --daemonize no "$@" >>"$dir/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  for _ in $(seq 200); do redis-cli -p "$port" ping >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "redis-server on $port does not answer: see $dir/redis.log" >&2
  exit 1
}
