#!/usr/bin/env bash
# Socket activation as systemd does it, by a real systemd-socket-activate: it binds the
# address, and on the first connection execs `hbiss serve`, which serves the inherited
# listening socket (LISTEN_FDS) instead of binding its own. Over TCP and over a Unix
# socket: the client that triggered the start is served, data written reads back in a
# later connection, and nbdinfo reads the export.
TEST_NAME=socket_activation
source "$(dirname "$0")/../nbd/lib.sh"
need systemd-socket-activate nbdinfo nbdsh

hbiss create vm -s 8M >/dev/null

# activate ADDRESS: starts systemd-socket-activate on ADDRESS (it execs hbiss serve in
# the same process when a client connects).
activate() {
  : >"$WORK/serve.log"
  systemd-socket-activate -l "$1" "$HBISS" --store "$STORE" serve --listen 127.0.0.1:1 \
    >>"$WORK/serve.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    grep -q "^Listening on" "$WORK/serve.log" && return 0
    sleep 0.05
  done
  fail "systemd-socket-activate did not listen on $1"
}

# run_clients URI WHAT: the first client starts the server; write, read back, nbdinfo.
run_clients() {
  local uri=$1 what=$2
  check "$what: first client writes" timeout 20 nbdsh -u "$uri" -c '
h.pwrite(b"activated" * 512, 4096)
h.flush()'
  grep -q "Execing" "$WORK/serve.log" || fail "$what: systemd-socket-activate never started hbiss"
  grep -q "listening on 1 socket(s) passed by systemd" "$WORK/serve.log" ||
    fail "$what: hbiss did not take the inherited socket"
  grep -q "listening on nbd://" "$WORK/serve.log" && fail "$what: --listen was not ignored"
  check "$what: second client reads back" timeout 20 nbdsh -u "$uri" -c '
assert h.pread(9 * 512, 4096) == b"activated" * 512'
  check "$what: nbdinfo" timeout 20 nbdinfo "$uri"
  grep -q "export-size: 8388608" "$WORK/check.out" || fail "$what: nbdinfo shows the wrong size"
  CHECKS=$((CHECKS + 3))
  stop_server
}

PORT=$(free_port)
activate "127.0.0.1:$PORT"
run_clients "nbd://127.0.0.1:$PORT/vm" "TCP"
grep -q "TCP port $PORT" "$WORK/serve.log" || fail "TCP: the inherited socket's port not logged"

activate "$WORK/nbd.sock"
run_clients "nbd+unix:///vm?socket=$WORK/nbd.sock" "Unix socket"
# The socket file is systemd's (the .socket unit's): hbiss does not remove it.
[ -S "$WORK/nbd.sock" ] || fail "hbiss removed the inherited Unix socket's file"
log "PASS ($CHECKS checks)"
