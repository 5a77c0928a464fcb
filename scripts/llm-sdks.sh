#!/usr/bin/env bash
# The official OpenAI SDKs as clients of the gateway: a fake OpenAI-compatible upstream
# (tests/llm/upstream.mjs) streams a chat completion with a pause longer than the proxy's idle
# timeout; the gateway example (examples/gateway.rs, heartbeat 300 ms) stands in front of it;
# an idle-timeout proxy (tests/llm/idle-proxy.mjs, 1 s, as nginx or an ALB at 60 s) stands in
# front of the gateway. The Python `openai` SDK and the npm `openai` SDK (pinned in
# tests/llm/requirements.txt and tests/llm/package-lock.json) each stream the completion through
# the proxy, with their own default headers (`Accept: application/json`) and with
# `Accept: text/event-stream`, and must return the whole text.
#
#   bash scripts/llm-sdks.sh
#
# Environment: LLM_BUILD_JOBS (cargo -j, default 1), LLM_KEEP=1 (keep the scratch directory).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
LLM="$ROOT/tests/llm"
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
EXPECTED="The quick brown fox jumps over the lazy dog."
HEARTBEAT_MS=300
IDLE_MS=1000
PAUSE_MS=1500

log() { printf 'llm-sdks: %s\n' "$*" >&2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tower-sse-llm.XXXXXX")
# The processes it starts, one pid a line: `start` runs in the background of this shell, and
# writes here, so that the trap stops every one of them.
: >"$WORK/pids"
cleanup() {
  while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$WORK/pids"
  [ -n "${LLM_KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- what it needs ----------------------------------------------------------------------------
for tool in node npm cargo python3 curl; do
  command -v "$tool" >/dev/null || { log "$tool is required"; exit 2; }
done
python3 -c 'import venv, ensurepip' 2>/dev/null || { log "python3's venv is required (Debian: apt-get install python3-venv)"; exit 2; }
if ! (cd "$LLM" && npm ci --no-audit --no-fund --loglevel=error) >"$WORK/npm-ci.log" 2>&1; then
  cat "$WORK/npm-ci.log" >&2
  log "npm ci failed"
  exit 2
fi
VENV="$TARGET_DIR/llm-venv"
if ! "$VENV/bin/python" -c 'import openai' 2>/dev/null; then
  log "installing the Python openai SDK into $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$LLM/requirements.txt" \
    >"$WORK/pip.log" 2>&1; then
  cat "$WORK/pip.log" >&2
  log "pip install failed"
  exit 2
fi

log "building the gateway example"
cargo build --quiet --example gateway --features gateway -j "${LLM_BUILD_JOBS:-1}"
GATEWAY_BIN="$TARGET_DIR/debug/examples/gateway"

# Starts a process (its pid recorded for the trap) whose first line of output names its address
# (`... http://ADDR ...`), and sets ADDR to that address.
start() {
  local name=$1
  shift
  "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  echo $! >>"$WORK/pids"
  ADDR=""
  for _ in $(seq 1 100); do
    ADDR=$(head -n 1 "$WORK/$name.out" | grep -o 'http://[0-9.:]*' | head -n 1 | sed 's|http://||' || true)
    [ -n "$ADDR" ] && return 0
    sleep 0.1
  done
  cat "$WORK/$name.err" >&2
  log "$name did not start"
  exit 2
}

start upstream node "$LLM/upstream.mjs" --pause-ms "$PAUSE_MS"
UPSTREAM=$ADDR
start gateway "$GATEWAY_BIN" --listen 127.0.0.1:0 --upstream "http://$UPSTREAM" \
  --heartbeat-ms "$HEARTBEAT_MS"
GATEWAY=$ADDR
start proxy node "$LLM/idle-proxy.mjs" --target "$GATEWAY" --idle-ms "$IDLE_MS"
PROXY=$ADDR
log "upstream $UPSTREAM, gateway $GATEWAY (heartbeat ${HEARTBEAT_MS} ms), idle proxy $PROXY (${IDLE_MS} ms); the model pauses ${PAUSE_MS} ms"

# The bytes each Accept gets from the gateway, as the SDKs would read them (shown, not judged).
REQUEST='{"model":"fake-model","messages":[{"role":"user","content":"hi"}],"stream":true}'
for accept in application/json text/event-stream; do
  curl -sN --max-time 10 -X POST -H 'content-type: application/json' -H "accept: $accept" \
    --data "$REQUEST" "http://$GATEWAY/v1/chat/completions" >"$WORK/bytes-${accept//\//-}" || true
  shown=$(node -e '
    const b = require("fs").readFileSync(process.argv[1], "utf8");
    const fox = b.indexOf("fox");
    const pause = b.slice(b.indexOf("\n", fox) + 1, b.indexOf("data:", fox));
    console.log("first", JSON.stringify(b.slice(0, 24)), "... during the pause", JSON.stringify(pause));
  ' "$WORK/bytes-${accept//\//-}" || true)
  log "bytes with Accept: $accept: $shown"
done

# --- the clients ------------------------------------------------------------------------------
STATUS=0
printf '%-8s %-28s %-6s %s\n' client accept result "text or error"
for client in python npm; do
  for accept in default event-stream; do
    case $client in
      python) cmd=("$VENV/bin/python" "$LLM/client.py") ;;
      npm) cmd=(node "$LLM/client.mjs") ;;
    esac
    out=$(timeout 60 "${cmd[@]}" --base "http://$PROXY" --accept "$accept" 2>"$WORK/$client-$accept.err" || true)
    ok=$(node -e 'try { const r = JSON.parse(process.argv[1]); console.log(r.ok && r.text === process.argv[2] ? "pass" : "FAIL") } catch { console.log("FAIL") }' "$out" "$EXPECTED")
    [ "$ok" = pass ] || STATUS=1
    shown=$accept
    [ "$accept" = default ] && shown="default (application/json)"
    printf '%-8s %-28s %-6s %s\n' "$client" "$shown" "$ok" "${out:-$(tail -n 3 "$WORK/$client-$accept.err")}"
  done
done
log "the upstream saw these Accept headers: $(grep -o '"accept":[^}]*' "$WORK/upstream.out" | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
if grep -q '"cut"' "$WORK/proxy.out"; then
  log "the idle proxy cut $(grep -c '"cut"' "$WORK/proxy.out") connection(s) for silence"
fi
[ "$STATUS" -eq 0 ] && log "every SDK returned the whole text" || log "some SDK did not return the whole text"
exit "$STATUS"
