#!/usr/bin/env bash
# Mercure's own conformance suite (tests/mercure/upstream, vendored unmodified from
# dunglas/mercure: Playwright, AGPL) against examples/mercure.rs, for both generations of the
# protocol: the draft's (match, match_urlpattern, at+jwt tokens) and the pre-standard one
# (topic=, URI templates, the `mercure` claim), in the installed Chromium. Every case must pass.
#
#   bash scripts/mercure-conformance.sh          # MERCURE_KEEP=1 keeps the hub's log and reports
#
# Installs what it needs: Debian's chromium if missing, @playwright/test as pinned by
# tests/mercure/package-lock.json (it drives the installed Chromium; no browser download).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
CHROMIUM=${CHROMIUM:-$(command -v chromium || true)}
if [ -z "$CHROMIUM" ]; then
  echo "mercure-conformance: installing chromium (apt)" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  CHROMIUM=$(command -v chromium)
fi
(cd tests/mercure && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
cargo build --quiet --example mercure --features mercure,axum -j "${MERCURE_BUILD_JOBS:-2}"
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')
OUT=$(mktemp -d "${TMPDIR:-/tmp}/tower-sse-mercure.XXXXXX")
PORT=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')

# The key and the token claims the suite's hard-coded tokens are made for: HS256 with Mercure's
# development key, `aud` https://localhost/.well-known/mercure and `iss` https://localhost (the
# public URL below); the suite subscribes without a token (--anonymous).
export MERCURE_PUBLISHER_JWT_KEY='!ChangeThisMercureHubJWTSecretKey!'
export MERCURE_SUBSCRIBER_JWT_KEY='!ChangeThisMercureHubJWTSecretKey!'
"$TARGET_DIR/debug/examples/mercure" --listen "127.0.0.1:$PORT" --anonymous \
  --public-url https://localhost/.well-known/mercure >"$OUT/hub.log" 2>&1 &
HUB=$!
cleanup() {
  kill -INT "$HUB" 2>/dev/null || true
  wait "$HUB" 2>/dev/null || true
  if [ -n "${MERCURE_KEEP:-}" ]; then echo "mercure-conformance: logs and reports in $OUT"; else rm -rf "$OUT"; fi
}
trap cleanup EXIT
for _ in $(seq 100); do
  grep -q "mercure hub on" "$OUT/hub.log" && break
  kill -0 "$HUB" 2>/dev/null || { cat "$OUT/hub.log"; exit 1; }
  sleep 0.1
done

status=0
for suite in draft pre-standard; do
  echo "mercure-conformance: the $suite suite"
  # The suite logs every request it makes: kept in a file, shown when a case fails.
  if ! (cd tests/mercure && MERCURE_SUITE=$suite BASE_URL="http://127.0.0.1:$PORT" CHROMIUM="$CHROMIUM" \
        CUSTOM_ID=1 MERCURE_REPORT="$OUT/report-$suite.json" \
        timeout 300 npx playwright test --config playwright.config.js >"$OUT/run-$suite.log" 2>&1); then
    cat "$OUT/run-$suite.log"
    status=1
  fi
  grep -E "^\s+(✓|✘)" "$OUT/run-$suite.log" || true
  node -e '
    const r = require(process.argv[1]);
    const s = r.stats;
    console.log(`mercure-conformance: ${process.argv[2]}: ${s.expected} passed, ${s.unexpected} failed, ${s.flaky} flaky, ${s.skipped} skipped`);
    if (s.unexpected || s.flaky || s.skipped || !s.expected) process.exit(1);
  ' "$OUT/report-$suite.json" "$suite" || status=1
done
[ "$status" -eq 0 ] || { echo "mercure-conformance: FAILED (hub log below)"; tail -50 "$OUT/hub.log"; }
exit "$status"
