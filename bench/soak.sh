#!/usr/bin/env bash
# The chaos soak (tests/soak.rs) for as long as asked, both variants side by
# side: one gateway on the disk store with kill -9, SIGTERM,
# SIGUSR2 and backend faults; three replicas on Redis with kill -9,
# SIGSTOP/SIGCONT, a Redis crash and backend faults. Each prints its
# counts (requests, jobs promised, faults injected by kind, final statuses,
# webhook deliveries, max RSS, store size) and its violations, and fails on
# any. CI runs both for two minutes inside `cargo test`.
#
#   bench/soak.sh            # 60 minutes each, the release build
#   bench/soak.sh 600        # 10 minutes each
#
# The report goes to bench/results/DATE/soak-TIME.md, the whole output of
# the run beside it (soak-TIME.log); a failure's own lines (the panic and
# what the gateways said) are copied into the report. Everything listens
# on 127.0.0.1 only. Run nothing else that binds loopback ports meanwhile:
# a gateway or Redis the soak restarts binds its port again, and another
# process given that port in between fails the soak.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
SECONDS_EACH=${1:-3600}
REPORT=${REPORT:-$BENCH_DIR/results/$(date -u +%Y-%m-%d)/soak-$(date -u +%H%M).md}
LOG=${REPORT%.md}.log
mkdir -p "$(dirname "$REPORT")"

for tool in redis-server; do
  command -v "$tool" >/dev/null || { echo "bench/soak.sh needs $tool (apt-get install redis-server)" >&2; exit 1; }
done

cd "$ROOT"
status=0
{
  echo "# Chaos soak, $(date -u +%Y-%m-%dT%H:%MZ), $SECONDS_EACH s of load per variant"
  echo
  echo "Commit $(git rev-parse --short HEAD), release build, \`SOAK_SECONDS=$SECONDS_EACH cargo test --release --all-features --test soak\`."
  echo
} > "$REPORT"
# Both variants at once (the test binary runs them side by side), so an
# hour of each takes an hour. The runner's progress dot may begin a line.
echo '```' >> "$REPORT"
SOAK_SECONDS=$SECONDS_EACH cargo test --release --all-features --quiet --test soak -- --nocapture 2>&1 |
  tee "$LOG" | grep -E '^\.?(\[(disk|redis)\]|test result)' | sed 's/^\.//' >> "$REPORT" || true
echo '```' >> "$REPORT"
if ! grep -q "test result: ok" "$REPORT"; then
  status=1
  {
    echo
    echo "Failed; from $(basename "$LOG"):"
    echo
    echo '```'
    grep -E -A12 'panicked|violation|---- ' "$LOG" | head -200
    echo '```'
  } >> "$REPORT"
fi
cat "$REPORT"
exit $status
