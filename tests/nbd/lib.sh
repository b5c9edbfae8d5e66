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
  local f
  for f in "$WORK"/serve.log "$WORK"/serve-*.log; do
    [ -f "$f" ] || continue
    echo "--- last lines of $(basename "$f"):" >&2
    tail -n 40 "$f" >&2
  done
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

# ---- several servers on one store (issue 9) ------------------------------------------------
# Each "node" is an `hbiss serve` with its own --server-id and --peer-listen address, as one
# host of a deployment; NAME is a shell word (A, B, ...), and the server id is hbiss-NAME.
NODE_PIDS=()

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# need_ownership: skips (77) unless this hbiss has issue 9's multi-server commands
# (`serve --server-id/--peer-listen`, `lock break`, `status`); HBISS_REQUIRE_OWNERSHIP=1
# makes that a failure.
need_ownership() {
  if ! "$HBISS" serve --help 2>&1 | grep -q -- --peer-listen ||
     ! "$HBISS" lock break --help >/dev/null 2>&1 ||
     ! "$HBISS" status --help >/dev/null 2>&1; then
    [ "${HBISS_REQUIRE_OWNERSHIP:-0}" = 1 ] &&
      fail "this hbiss has no serve --peer-listen / lock break / status (HBISS_REQUIRE_OWNERSHIP=1)"
    skip "this hbiss has no serve --peer-listen / lock break / status (issue 9 not landed)"
  fi
}

# start_node NAME [serve args...]: starts a server with --server-id hbiss-NAME and a peer
# address of its own, its log in $WORK/serve-NAME.log. Sets PORT_NAME (NBD), PEER_NAME
# (peer port) and PID_NAME.
start_node() {
  local name=$1 peer pid port log=$WORK/serve-$1.log
  shift
  peer=$(free_port)
  : >"$log"
  "$HBISS" --store "$STORE" serve --listen 127.0.0.1:0 --server-id "hbiss-$name" \
    --peer-listen "127.0.0.1:$peer" "$@" >>"$log" 2>&1 &
  pid=$!
  NODE_PIDS+=("$pid")
  for _ in $(seq 1 200); do
    port=$(grep -o 'listening on nbd://127.0.0.1:[0-9]*' "$log" | head -n1 | sed 's/.*://') || true
    if [ -n "$port" ]; then
      eval "PORT_$name=$port PEER_$name=$peer PID_$name=$pid"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || fail "server $name exited at startup"
    sleep 0.05
  done
  fail "server $name did not start listening"
}

# kill9_node NAME: SIGKILL, no cleanup (a host that dies). Fails the test if the server
# had already exited by itself (a crash: its exit status is named).
kill9_node() {
  local pid rc=0
  eval "pid=\${PID_$1:-}"
  [ -n "$pid" ] || return 0
  eval "PID_$1="
  if ! kill -KILL "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || rc=$?
    fail "server $1 (pid $pid) had exited by itself before the kill, status $rc"
  fi
  wait "$pid" 2>/dev/null || true
}

# stop_node NAME: SIGTERM; the server must exit 0.
stop_node() {
  local pid rc=0
  eval "pid=\${PID_$1:-}"
  [ -n "$pid" ] || return 0
  kill -TERM "$pid"
  wait "$pid" || rc=$?
  eval "PID_$1="
  [ "$rc" -eq 0 ] || fail "server $1 exited with status $rc after SIGTERM"
}

node_uri() { local p; eval "p=\$PORT_$1"; echo "nbd://127.0.0.1:$p/$2"; }

# owner_of VOL: the server id `hbiss status VOL --json` names as the owner ("" for none).
owner_of() {
  local out
  out=$("$HBISS" --store "$STORE" status "$1" --json) || return 1
  echo "$out" | python3 -c '
import json, sys
o = json.load(sys.stdin).get("owner")
print(o["server"] if o else "")'
}

# wait_owner VOL ID WHAT [SECONDS]: the owner must become ID ("" for nobody) within SECONDS
# (default 10): a server releases a volume a moment after its last client went away.
wait_owner() {
  local got deadline=$(($(date +%s) + ${4:-10}))
  while :; do
    got=$(owner_of "$1") || fail "hbiss status $1 --json failed ($3)"
    [ "$got" = "$2" ] && break
    [ "$(date +%s)" -lt "$deadline" ] ||
      fail "$3: hbiss status names owner '${got}', expected '${2}' (waited ${4:-10} s)"
    sleep 0.2
  done
  CHECKS=$((CHECKS + 1))
}

# expect_took_ownership ID WHAT: server ID's log says it became a volume's owner (a server
# lets a volume go a moment after its last client leaves, so status may already name nobody).
expect_took_ownership() {
  grep -q "this server ($1) owns it now" "$WORK/serve-${1#hbiss-}.log" ||
    fail "$2: server $1 never logged taking ownership"
  CHECKS=$((CHECKS + 1))
}

# expect_owner VOL ID WHAT: the owner must be ID ("" for nobody).
expect_owner() {
  local got
  got=$(owner_of "$1") || fail "hbiss status $1 --json failed ($3)"
  [ "$got" = "$2" ] || fail "$3: hbiss status names owner '${got}', expected '${2}'"
  CHECKS=$((CHECKS + 1))
}

cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ]; then kill -KILL "$SERVER_PID" 2>/dev/null || true; fi
  local p
  for p in "${NODE_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if [ -n "${EXTRA_CLEANUP:-}" ]; then eval "$EXTRA_CLEANUP" || true; fi
  if [ "${HBISS_KEEP_WORK:-0}" = 1 ]; then echo "[$TEST_NAME] kept $WORK" >&2; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT

finish() {
  stop_server
  log "PASS ($CHECKS checks)"
}
