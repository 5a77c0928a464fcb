#!/usr/bin/env bash
# The Redis engine's rolling restart (tests/rolling/orchestrator.rs, release build): a real redis-server,
# three hub nodes (examples/hub.rs --redis) stopped and started in turn and one killed, a fleet
# of subscribers reconnecting to any node (a few of them npm `eventsource` clients), a steady
# publisher; zero events lost, zero duplicated, a gap event only where history was trimmed.
#
#   bash scripts/rolling-restart.sh                          # 1 000 subscribers, as CI runs it
#   ROLLING_SUBSCRIBERS=5000 ROLLING_RATE=50 bash scripts/rolling-restart.sh
#
# Installs what it needs: Debian's redis-server if missing, eventsource as pinned by
# tests/rolling/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v redis-server >/dev/null 2>&1; then
  echo "rolling-restart: installing redis-server (apt)" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
(cd tests/rolling && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
cargo build --release --quiet --example hub --features redis -j "${ROLLING_BUILD_JOBS:-2}"
cargo build --release --quiet -p tower-sse-fixtures --bin rolling-restart -j "${ROLLING_BUILD_JOBS:-2}"
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')
timeout 600 "$TARGET_DIR/release/rolling-restart" \
  "$TARGET_DIR/release/examples/hub" tests/rolling/eventsource.mjs
