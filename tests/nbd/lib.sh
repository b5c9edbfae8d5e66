# Shared helpers for the real-client NBD tests. Source it after setting
# TEST_NAME; the first script argument is the hbiss binary.
# Each test gets a temp store and starts/stops its own `hbiss serve` on a
# kernel-chosen 127.0.0.1 port (read back from the server's log).
set -euo pipefail

HBISS=${1:?usage: $0 /path/to/hbiss}
HBISS=$(readlink -f "$HBISS")
# nbdsh and nbdkit's python need Debian's python3, not one earlier in PATH.
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH
WORK=$(mktemp -d /tmp/hbiss-nbd-${TEST_NAME:-test}.XXXXXX)
STORE=$WORK/store
mkdir -p "$STORE"
SERVER_PID=""
PORT=""
CHECKS=0

log() { echo "[$TEST_NAME] $*"; }

fail() {
  echo "[$TEST_NAME] FAIL: $*" >&2
  if [ -f "$WORK/serve.log" ]; then
    echo "--- last lines of the server log:" >&2
    tail -n 40 "$WORK/serve.log" >&2
  fi
  exit 1
}

skip() {
  echo "[$TEST_NAME] SKIP: $*"
  exit 77
}

need() {
  for t in "$@"; do command -v "$t" >/dev/null 2>&1 || skip "$t is not installed"; done
}

# check "what" cmd args...: runs the command, fails the test if it fails.
check() {
  local what=$1
  shift
  if ! "$@" >"$WORK/check.out" 2>&1; then
    cat "$WORK/check.out" >&2
    fail "$what"
  fi
  CHECKS=$((CHECKS + 1))
}

# check_fails "what" cmd args...: the command must fail.
check_fails() {
  local what=$1
  shift
  if "$@" >"$WORK/check.out" 2>&1; then
    cat "$WORK/check.out" >&2
    fail "$what (expected failure)"
  fi
  CHECKS=$((CHECKS + 1))
}

hbiss() { "$HBISS" --store "$STORE" "$@"; }

# start_server [serve args...]: starts hbiss serve and sets PORT.
start_server() {
  : >"$WORK/serve.log"
  "$HBISS" --store "$STORE" serve --listen 127.0.0.1:0 "$@" >>"$WORK/serve.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 200); do
    PORT=$(grep -o 'listening on nbd://127.0.0.1:[0-9]*' "$WORK/serve.log" | head -n1 |
           sed 's/.*://') || true
    [ -n "$PORT" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || fail "hbiss serve exited at startup"
    sleep 0.05
  done
  fail "hbiss serve did not start listening"
}

# stop_server: SIGTERM, and the server must exit 0 after flushing volumes.
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID"
  local rc=0
  wait "$SERVER_PID" || rc=$?
  SERVER_PID=""
  [ "$rc" -eq 0 ] || fail "hbiss serve exited with status $rc after SIGTERM"
  grep -q "all volumes flushed and closed" "$WORK/serve.log" || fail "no clean shutdown logged"
}

# kill9_server: SIGKILL, no cleanup.
kill9_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

uri() { echo "nbd://127.0.0.1:$PORT/$1"; }

cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ]; then kill -KILL "$SERVER_PID" 2>/dev/null || true; fi
  if [ -n "${EXTRA_CLEANUP:-}" ]; then eval "$EXTRA_CLEANUP" || true; fi
  if [ "${HBISS_KEEP_WORK:-0}" = 1 ]; then echo "[$TEST_NAME] kept $WORK" >&2; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT

finish() {
  stop_server
  log "PASS ($CHECKS checks)"
}
