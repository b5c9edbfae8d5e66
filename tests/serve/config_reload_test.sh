#!/usr/bin/env bash
# hbiss serve --config FILE with SIGHUP: while one client writes and verifies without
# pause, the log level is reloaded (and takes effect: info lines stop at "warn"), a
# broken file is rejected with its line and the running settings stay, a key that
# needs a restart is only warned about, and a per-export limit and access rules are
# reloaded (new clients are refused or see the export hidden, the workload's connection
# stays). The client never sees an error or a disconnect.
TEST_NAME=config_reload
source "$(dirname "$0")/../nbd/lib.sh"
need nbdinfo python3
python3 -c 'import nbd' 2>/dev/null || skip "python3-libnbd is not installed"

CONF=$WORK/serve.toml
# nbd.listen is overridden by start_server's --listen 127.0.0.1:0 (flags win).
write_conf() { # LEVEL
  printf '[nbd]\nworkers = 4\nlisten = "127.0.0.1:1"\n[log]\nlevel = "%s"\n' "$1" >"$CONF"
}
# wait_log PATTERN WHAT: the server log gets a line matching PATTERN within 10 s.
wait_log() {
  for _ in $(seq 1 200); do
    grep -q -- "$1" "$WORK/serve.log" && { CHECKS=$((CHECKS + 1)); return 0; }
    sleep 0.05
  done
  fail "$2: no log line matching '$1'"
}
count() { grep -c -- "$1" "$WORK/serve.log" || true; }

hbiss create vm -s 16M >/dev/null
# A bad value at startup: serve exits 1 with the file, line and key, before serving.
printf '[log]\nlevel = "info"\n\n[nbd]\nworkers = 99\n' >"$CONF"
check_fails "serve with workers = 99" "$HBISS" --store "$STORE" serve --config "$CONF"
grep -q "^hbiss: config: .*$CONF:5: nbd.workers: bad value '99'" "$WORK/check.out" ||
  fail "startup error does not name file, line and key: $(cat "$WORK/check.out")"

write_conf info
start_server --config "$CONF"
[ "$PORT" != 1 ] || fail "the file's nbd.listen won over --listen"

python3 "$(dirname "$0")/reload_workload.py" "$(uri vm)" "$WORK/stop" >"$WORK/workload.out" \
  2>&1 &
WORKLOAD=$!
EXTRA_CLEANUP="kill $WORKLOAD 2>/dev/null"
wait_log "nbd #1 .*: connected" "the workload connects"
sleep 1

# 1. log.level = warn: reloaded, and a new connection's info line is no longer logged.
write_conf warn
kill -HUP "$SERVER_PID"
wait_log "reloaded $CONF" "reload of a valid file"
grep -q "log.level is now warn (was info)" "$WORK/serve.log" || fail "level change not logged"
before=$(count ": connected")
check "nbdinfo at level warn" nbdinfo "$(uri vm)"
sleep 0.3
[ "$(count ": connected")" -eq "$before" ] || fail "an info line was logged at level warn"
CHECKS=$((CHECKS + 1))

# 2. Back to info (logged at warn? no: the change is applied first, then logged at info).
write_conf info
kill -HUP "$SERVER_PID"
wait_log "log.level is now info (was warn)" "level back to info"
check "nbdinfo at level info" nbdinfo "$(uri vm)"
wait_log "nbd #3 .*: connected" "info lines come back at level info"

# 3. A broken file (line 5 is not TOML): rejected with file and line; level stays info.
printf '[nbd]\nworkers = 4\nlisten = "127.0.0.1:1"\n[log]\nlevel = = "debug"\n' >"$CONF"
kill -HUP "$SERVER_PID"
wait_log "reload rejected, keeping the running settings: .*$CONF:5" "broken file rejected"
# 4. An unknown key: rejected, and named.
printf '[nbd]\nworkers = 4\nlisten = "127.0.0.1:1"\n[log]\nlevel = "debug"\ncolour = "blue"\n' >"$CONF"
kill -HUP "$SERVER_PID"
wait_log "$CONF:6: log.colour: unknown key" "unknown key rejected"
check "nbdinfo after rejected reloads" nbdinfo "$(uri vm)"
wait_log "nbd #4 .*: connected" "level info kept after the rejected files"
grep -q "log.level is now debug" "$WORK/serve.log" && fail "a rejected file changed the level"

# 5. A restart-only key: warned about, not applied.
printf '[nbd]\nworkers = 2\nlisten = "127.0.0.1:1"\n[log]\nlevel = "info"\n' >"$CONF"
kill -HUP "$SERVER_PID"
wait_log "nbd.workers changed to 2 .*takes effect at the next restart (running with 4)" \
  "restart-only key warned"

# 6. Limits: one connection per export. The workload's connection stays; a new
#    client of the same export is refused (NBD_REP_ERR_POLICY), and the log says why.
printf '[nbd]\nworkers = 2\nlisten = "127.0.0.1:1"\n[log]\nlevel = "info"\n[limits]\nmax-connections-per-export = 1\n' >"$CONF"
kill -HUP "$SERVER_PID"
wait_log "limits.max-connections-per-export is now 1" "per-export limit reloaded"
wait_log "nbd: limits: 1024 connections, 1 per export" "the server took the new limits"
check_fails "a second client over the reloaded per-export limit" nbdinfo "$(uri vm)"
wait_log "export 'vm' already has 1 connections" "the refusal is logged with its reason"

# 7. Access rules: vm hidden from TCP clients; it then looks missing to a new client,
#    while the workload (accepted before) goes on.
printf '[nbd]\nworkers = 2\nlisten = "127.0.0.1:1"\n[log]\nlevel = "info"\n[access]\nallow = ["other *"]\n' >"$CONF"
kill -HUP "$SERVER_PID"
wait_log "reload: 1 access rule" "access rules reloaded"
check_fails "a client of an export the reloaded rules hide" nbdinfo "$(uri vm)"
grep -q "hidden by the access rules" "$WORK/serve.log" || fail "the hidden export is not logged"
# 8. Rules gone and the default limits back: new clients are served again.
write_conf info
kill -HUP "$SERVER_PID"
wait_log "reload: 0 access rule" "rules removed"
check "nbdinfo once the rules and the limit are gone" nbdinfo "$(uri vm)"

sleep 1
touch "$WORK/stop"
rc=0
wait "$WORKLOAD" || rc=$?
[ "$rc" -eq 0 ] || { cat "$WORK/workload.out" >&2; fail "the workload failed during reloads"; }
rounds=$(tail -n1 "$WORK/workload.out")
[ "$rounds" -gt 10 ] || fail "the workload made only $rounds rounds"
log "workload: $rounds verified rounds across 8 reloads"
CHECKS=$((CHECKS + 1))
# Its one connection lasted throughout: disconnected once, cleanly, at the end.
wait_log "nbd #1 .*: disconnected after" "the workload's connection ends cleanly"
grep -q "nbd #1 .*closed" "$WORK/serve.log" && fail "the workload's connection was closed"
finish
