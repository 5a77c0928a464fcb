#!/usr/bin/env bash
# Where the hub's server CPU goes in the fan-out case of benches/hub.rs (10 000 subscribers,
# 500 events over HTTP publishes), for the hub and for axum + broadcast: the share spent in the
# kernel, and how many writes each server made (events per write). Needs `perf` (Debian:
# linux-perf) and root or perf_event_paranoid <= 0; not run by CI.
#
#   bash scripts/hub-profile.sh            # one run of the bench, both servers profiled
set -euo pipefail
cd "$(dirname "$0")/.."

command -v perf >/dev/null || { echo "hub-profile: perf is not installed" >&2; exit 1; }
ulimit -n 20000

BENCH=$(cargo bench --bench hub --features hub --no-run -j "${HUB_PROFILE_BUILD_JOBS:-2}" 2>&1 \
  | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
[ -x "$BENCH" ] || { echo "hub-profile: the bench did not build" >&2; exit 1; }
OUT=$(mktemp -d "${TMPDIR:-/tmp}/hub-profile.XXXXXX")
TOWER_SSE_HUB_RUNS=1 timeout 900 "$BENCH" --bench >"$OUT/bench.txt" 2>&1 &
BENCH_PID=$!

# The fan-out case runs first, each server in a child process of its own, one after the other:
# the first process of each server is its fan-out run.
for server in hub axum; do
  pid=""
  for _ in $(seq 1 6000); do
    pid=$(pgrep -f -- "--hub-server $server" | head -1 || true)
    [ -n "$pid" ] && break
    sleep 0.05
  done
  [ -n "$pid" ] || { echo "hub-profile: no $server server appeared" >&2; exit 1; }
  perf stat -e 'syscalls:sys_enter_writev,syscalls:sys_enter_write' -p "$pid" \
    -o "$OUT/$server.stat" >/dev/null 2>&1 &
  STAT_PID=$!
  perf record -q -F 999 -p "$pid" -o "$OUT/$server.data" >/dev/null 2>&1 || true
  wait "$STAT_PID" || true
  writes=$(awk '/syscalls:sys_enter_write/ { gsub(",", "", $1); n += $1 } END { print n + 0 }' "$OUT/$server.stat")
  kernel=$(perf report -i "$OUT/$server.data" --sort dso --stdio 2>/dev/null \
    | awk '/\[kernel/ { gsub("%", "", $1); print $1 }' | head -1)
  echo "$server: kernel share of the server's CPU ${kernel:-?} %, writes ${writes} (5 000 000 deliveries: $(awk -v w="$writes" 'BEGIN { if (w > 0) printf "%.1f", 5000000 / w; else print "?" }') events per write)"
done
wait "$BENCH_PID" || true
grep -E "server CPU per delivery" "$OUT/bench.txt" | head -2
echo "hub-profile: raw data in $OUT"
