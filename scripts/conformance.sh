#!/usr/bin/env bash
# Conformance suite: real clients we did not write read tower-sse's streams.
#
# Installs what it needs (Debian's chromium, the npm packages pinned by
# tests/conformance/package-lock.json), builds and starts the fixture server
# (tests/conformance/server.rs) on 127.0.0.1, runs the four drivers (headless Chromium's
# EventSource, the npm `eventsource` client, the npm `eventsource-parser` over every byte split),
# prints the table case × client and ends with "N passed, N failed" (exit 1 on any failure); then
# runs every case again with each stream compressed (gzip, br, zstd: CONFORMANCE_CODINGS) for
# Chromium, the npm `eventsource` client (gzip, br) and the crate's reader.
#
#   bash scripts/conformance.sh
#
# Environment: CONFORMANCE_BUILD_JOBS (cargo -j, default 1), CHROMIUM (browser binary),
# CONFORMANCE_KEEP=1 (keep the scratch directory: each client's raw results, the server's
# request log as requests-<client>.json, the drivers' output).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
CONF="$ROOT/tests/conformance"
START=$(date +%s)

log() { printf 'conformance: %s\n' "$*" >&2; }

# Scratch space and the fixture server, cleaned up on every exit.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tower-sse-conformance.XXXXXX")
SERVER_PID=""
declare -A DRIVER_PID=()
cleanup() {
  for pid in "${DRIVER_PID[@]}"; do
    kill "$pid" 2>/dev/null || true # `timeout` passes the TERM on to its driver
  done
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
  fi
  [ -n "${CONFORMANCE_KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- what it needs ----------------------------------------------------------------------------
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

CHROMIUM=${CHROMIUM:-$(command -v chromium || true)}
if [ -z "$CHROMIUM" ]; then
  log "installing chromium (apt)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  CHROMIUM=$(command -v chromium)
fi
for tool in node npm cargo; do
  command -v "$tool" >/dev/null || { log "$tool is required"; exit 2; }
done

if ! (cd "$CONF" && npm ci --no-audit --no-fund --loglevel=error) >"$WORK/npm-ci.log" 2>&1; then
  cat "$WORK/npm-ci.log" >&2
  log "npm ci failed"
  exit 2
fi

log "building the fixture server"
cargo build --quiet -p tower-sse-fixtures --bin conformance --bin conformance-reader -j "${CONFORMANCE_BUILD_JOBS:-1}"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SERVER="$TARGET_DIR/debug/conformance"
READER="$TARGET_DIR/debug/conformance-reader"

# --- the fixture server ------------------------------------------------------------------------
# Starts the server with extra flags; sets BASE.
start_server() {
  "$SERVER" --listen 127.0.0.1:0 --dir "$CONF" --exit-after 900 "$@" >"$WORK/server.out" 2>"$WORK/server.err" &
  SERVER_PID=$!
  BASE=""
  for _ in $(seq 1 100); do
    BASE=$(sed -n '1s/^listening on //p' "$WORK/server.out")
    [ -n "$BASE" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$BASE" ]; then
    cat "$WORK/server.err" >&2
    log "the fixture server did not start"
    exit 2
  fi
  log "fixture server at $BASE${*:+ ($*)}"
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# --- the drivers, in parallel (each bounded by its own timeouts, and by `timeout` here) ---------
# run_drivers OUT ACCEPT_ENCODING NAME...: the named drivers against $BASE, results in OUT; the
# node driver and the reader ask for ACCEPT_ENCODING when it is not empty (Chromium always asks
# for gzip, deflate, br and zstd).
run_drivers() {
  local out=$1 accept=$2
  shift 2
  mkdir -p "$out"
  local start
  start=$(date +%s)
  for name in "$@"; do
    extra=()
    [ "$name" = chromium ] && extra=(--chromium "$CHROMIUM")
    [ "$name" = node ] && [ -n "$accept" ] && extra=(--accept-encoding "$accept")
    if [ "$name" = reader ]; then
      [ -n "$accept" ] && extra=(--accept-encoding "$accept")
      # The crate's own reader, a Rust binary.
      timeout 300 "$READER" --base "$BASE" --out "$out" "${extra[@]}" >"$out/$name.out" 2>&1 &
    else
      timeout 300 node "$CONF/driver-$name.mjs" --base "$BASE" --out "$out" "${extra[@]}" \
        >"$out/$name.out" 2>&1 &
    fi
    DRIVER_PID[$name]=$!
  done
  for name in "$@"; do
    if wait "${DRIVER_PID[$name]}"; then
      log "driver $name done after $(( $(date +%s) - start )) s"
    else
      log "driver $name failed:"
      cat "$out/$name.out" >&2
    fi
    unset "DRIVER_PID[$name]"
  done
}

# --- the table ----------------------------------------------------------------------------------
STATUS=0
start_server
run_drivers "$WORK" "" parser node chromium reader
if [ -n "${CONFORMANCE_KEEP:-}" ]; then
  for client in chromium node parser reader; do
    id=$(node -e 'try { console.log(require(process.argv[1]).client ?? "") } catch { }' "$WORK/$client.json")
    [ -n "$id" ] && curl -fsS --max-time 10 "$BASE/requests?client=$id" >"$WORK/requests-$client.json" || true
  done
fi
node "$CONF/compare.mjs" --base "$BASE" --out "$WORK" >"$WORK/table.txt" 2>&1 || STATUS=$?
cat "$WORK/table.txt"
stop_server

# --- compressed: every case again, each stream compressed with one coding -----------------------
# Chromium asks for every coding; Node 20's fetch decodes gzip (what it asks for) and br (when
# told to ask), not zstd; the reader decodes all three. CONFORMANCE_CODINGS="" skips this part.
for coding in ${CONFORMANCE_CODINGS-gzip br zstd}; do
  start_server --compression "$coding"
  clients=(chromium reader)
  [ "$coding" != zstd ] && clients=(chromium node reader)
  run_drivers "$WORK/$coding" "$coding" "${clients[@]}"
  if [ -n "${CONFORMANCE_KEEP:-}" ]; then
    for client in "${clients[@]}"; do
      id=$(node -e 'try { console.log(require(process.argv[1]).client ?? "") } catch { }' "$WORK/$coding/$client.json")
      [ -n "$id" ] && curl -fsS --max-time 10 "$BASE/requests?client=$id" >"$WORK/$coding/requests-$client.json" || true
    done
  fi
  table="$WORK/table-$coding.txt"
  node "$CONF/compare.mjs" --base "$BASE" --out "$WORK/$coding" --coding "$coding" \
    --clients "$(IFS=,; echo "${clients[*]}")" >"$table" 2>&1 || STATUS=1
  echo
  echo "== compressed with $coding: ${clients[*]}"
  grep -E "^(FAIL|known|[0-9]+ (passed|event streams|documented))" "$table" || cat "$table"
  stop_server
done

log "wall time $(( $(date +%s) - START )) s"
[ -z "${CONFORMANCE_KEEP:-}" ] || log "results, logs and the server's request log kept in $WORK"
exit "$STATUS"
