#!/usr/bin/env bash
# Runs every benchmark and prints one table: tower-sse against axum 0.8 and raw hyper, each
# ratio measured side by side in the same run (median of repeated runs, with min–max).
#
#   bash scripts/bench.sh            # a few minutes on a 2-core machine
#
# The idle-connection bench opens 10 000 connections (TOWER_SSE_IDLE_CONNECTIONS to change):
# the soft open-file limit is raised to the hard limit here, and the bench measures fewer
# connections (and says so) if that is still too low.
set -euo pipefail
cd "$(dirname "$0")/.."

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export TOWER_SSE_BENCH_TABLE=1
export CARGO_TERM_COLOR=never

benches=(encoder in_process loopback idle compression)
args=()
for bench in "${benches[@]}"; do args+=(--bench "$bench"); done
cargo bench --all-features --no-run "${args[@]}" >/dev/null 2>&1 || cargo bench --all-features --no-run "${args[@]}"

echo "# tower-sse benchmarks"
echo
echo "- date: $(date -u +%Y-%m-%d)"
echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "- toolchain: $(rustc --version)"
echo "- open files limit: $(ulimit -n)"
echo
echo "| benchmark | case | tower-sse | baseline | baseline value | tower-sse / baseline: median (min–max) |"
echo "|---|---|---|---|---|---|"
for bench in "${benches[@]}"; do
  cargo bench --all-features -q --bench "$bench" | grep '^|' || { echo "bench $bench failed" >&2; exit 1; }
done
