#!/usr/bin/env bash
# The hub board (examples/hub.rs) in headless Chromium: two pages subscribe, messages published
# over HTTP reach both in order, the server restarts on the same port, and each page shows the
# gap event, then the new messages (tests/hub/browser.mjs; assertions on the DOM, a screenshot
# of each page kept).
#
#   bash scripts/hub-browser.sh          # HUB_BROWSER_OUT=DIR keeps the screenshots there
#
# Installs what it needs: Debian's chromium if missing, playwright-core as pinned by
# tests/hub/package-lock.json (its library only: it drives the installed Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
CHROMIUM=${CHROMIUM:-$(command -v chromium || true)}
if [ -z "$CHROMIUM" ]; then
  echo "hub-browser: installing chromium (apt)" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  CHROMIUM=$(command -v chromium)
fi
(cd tests/hub && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
cargo build --quiet --example hub --features hub,axum -j "${HUB_BROWSER_BUILD_JOBS:-2}"
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')
OUT=${HUB_BROWSER_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/tower-sse-hub-browser.XXXXXX")}
mkdir -p "$OUT"
timeout 120 node tests/hub/browser.mjs --server "$TARGET_DIR/debug/examples/hub" --out "$OUT" --chromium "$CHROMIUM"
echo "hub-browser: screenshots in $OUT"
