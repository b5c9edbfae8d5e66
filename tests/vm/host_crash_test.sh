#!/usr/bin/env bash
# A host dies under a running guest (issue 9), on the real HDFS cluster.
#
# Two servers on one hdfs:// store, as two hosts: A (--server-id hbiss-A) and B (hbiss-B),
# each with its own peer address. QEMU A's disk comes from server A; its guest runs the
# writer workload (init.sh, hbiss_mode=writer: it writes and fsyncs files and prints
# `HBISS-VM-FILE i uptime` once file i is durable). After MIN_FILES files, at a random
# moment, QEMU A and server A are killed with SIGKILL together (the host is gone). Then:
#   - `hbiss status` still names hbiss-A as the owner, and B's `hbiss lock break` refuses
#     nothing: A does not answer, so the break succeeds and leaves no owner;
#   - QEMU B boots the volume through server B (hbiss_mode=recover): the mount replays the
#     journal (B's first writes: B takes ownership at once, no lease wait), e2fsck -fn is
#     clean, and every file the guest reported durable before the kill verifies against
#     the list it stored;
#   - server B logs that it took ownership, and `hbiss status` names no owner once QEMU B
#     is gone (B released it).
# Then the automatic takeover (HBISS_CRASH_AUTO=1, the default): a writer guest on B, QEMU
# and server B killed together, and no lock break: QEMU A3 boots the volume through a new
# server A, whose first write waits for B's HDFS lease (~60 s soft limit) and takes the
# volume by itself; the recover boot must pass within AUTO_LIMIT (120 s) of the kill, and
# server A must log that it took ownership. bench/migration/takeover.sh times both kinds repeatedly.
#
# Usage: host_crash_test.sh HBISS_BINARY GUEST_CACHE_DIR
# Needs HBISS_HDFS_URI (skipped without it unless HBISS_REQUIRE_HDFS=1), QEMU and the guest
# kernel (skipped without them unless HBISS_REQUIRE_VM=1).
TEST_NAME=vm_host_crash
GUEST_DIR=${2:?usage: $0 HBISS_BINARY GUEST_CACHE_DIR}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../nbd/lib.sh"
log() { echo "[$TEST_NAME $(date +%T.%N | cut -c1-12)] $*"; }

MIN_FILES=${HBISS_CRASH_MIN_FILES:-25}
AUTO=${HBISS_CRASH_AUTO:-1}
AUTO_LIMIT=${HBISS_CRASH_AUTO_LIMIT:-120}
STEP_TIMEOUT=${HBISS_MIGRATION_STEP_TIMEOUT:-240}
QPIDS=()
EXTRA_CLEANUP='for p in "${QPIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done;
  "$HBISS" dfs rm -r -f "$STORE" >/dev/null 2>&1'
if [ -z "${HBISS_HDFS_URI:-}" ]; then
  [ "${HBISS_REQUIRE_HDFS:-0}" = 1 ] && fail "HBISS_REQUIRE_HDFS=1 but HBISS_HDFS_URI is not set"
  skip "HBISS_HDFS_URI is not set (no live HDFS cluster)"
fi
need_ownership
source "$HERE/guest_lib.sh"
need_guest qemu-system-x86_64 busybox python3 timeout
source "$HERE/migration_lib.sh"
started=$(date +%s)
HDFS_DIR="/hbiss-host-crash-$(date +%s)-$$"
STORE="${HBISS_HDFS_URI%/}$HDFS_DIR"
"$HBISS" dfs mkdir "$STORE" >/dev/null || fail "cannot create $STORE"
check "create a 256 MiB volume in HDFS" hbiss create disk -s 256M
start_node A
start_node B

# Files whose whole line (number and uptime) reached the console: each was durable.
synced_files() { { grep -a -o -E 'HBISS-VM-FILE [0-9]+ [0-9]' "$WORK/$1.console" || true; } |
                 tail -n 1 | awk '{print $2}'; }

# ---- A writes; kill -9 QEMU A and server A together ----------------------------------------
qemu A "$(node_uri A disk)" "hbiss_mode=writer hbiss_files=100000"
wait_file A "$MIN_FILES"
expect_owner disk hbiss-A "while QEMU A writes"
RANDOM=$$
sleep "$((RANDOM % 3)).$((RANDOM % 10))"
kill -KILL "$QPID_A" "$PID_A" 2>/dev/null || true
wait "$QPID_A" 2>/dev/null || true
wait "$PID_A" 2>/dev/null || true
PID_A=
killed_at=$(date +%s.%N)
sleep 0.2  # the console file is complete once QEMU is gone
SYNCED=$(synced_files A)
log "host A (QEMU and server) killed with SIGKILL; the guest had reported $SYNCED files durable"
[ "${SYNCED:-0}" -ge "$MIN_FILES" ] || fail "only ${SYNCED:-0} files before the kill"

# ---- explicit takeover on B ----------------------------------------------------------------
expect_owner disk hbiss-A "after the kill (nobody took the volume yet)"
t0=$(date +%s.%N)
check "hbiss lock break disk (hbiss-A is dead)" hbiss lock break disk
log "lock break: $(tr '\n' ' ' <"$WORK/check.out") ($(python3 -c "import sys,time;print(round(time.time()-float(sys.argv[1]),2))" "$t0") s)"
expect_owner disk "" "after lock break"

# ---- QEMU B boots the volume through server B -----------------------------------------------
qemu B "$(node_uri B disk)" "hbiss_mode=recover hbiss_files=$SYNCED"
deadline=$(($(date +%s) + STEP_TIMEOUT))
until grep -a -q 'HBISS-VM-RESULT' "$WORK/B.console" 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || { tail -n 20 "$WORK/B.console" >&2; fail "the recover boot on B did not finish"; }
  kill -0 "$QPID_B" 2>/dev/null || { cat "$WORK/B.out" >&2; fail "QEMU B exited without a verdict"; }
  sleep 0.5
done
verdict=$(grep -a 'HBISS-VM-RESULT' "$WORK/B.console" | tr -d '\r' | sed 's/^.*HBISS-VM-RESULT: //')
log "recover boot on B: $verdict ($(python3 -c "import sys,time;print(round(time.time()-float(sys.argv[1]),1))" "$killed_at") s after the kill)"
case "$verdict" in
  "PASS mode=recover files=$SYNCED "*) ;;
  *) tail -n 30 "$WORK/B.console" >&2; fail "recover boot: $verdict" ;;
esac
CHECKS=$((CHECKS + 1))
wait "$QPID_B" 2>/dev/null || true
# B took the volume for the journal replay, and gave it up when QEMU B powered off (a server
# closes a volume, and stops owning it, when its last client goes).
grep -q "this server (hbiss-B) owns it now" "$WORK/serve-B.log" ||
  fail "server B never took ownership for the recover boot's writes"
CHECKS=$((CHECKS + 1))
wait_owner disk "" "after the recover boot on B ended (B released it)"

# ---- automatic takeover: host B dies too; no lock break --------------------------------------
# A new writer on B (a fresh filesystem), then QEMU B2 and server B are killed together and
# QEMU A3 boots the volume through a new server A: its first write (the journal replay)
# waits until B's HDFS lease expires and then takes the volume by itself.
if [ "$AUTO" = 1 ]; then
  start_node A
  qemu B2 "$(node_uri B disk)" "hbiss_mode=writer hbiss_files=100000"
  wait_file B2 "$MIN_FILES"
  sleep "$((RANDOM % 3)).$((RANDOM % 10))"
  kill -KILL "$QPID_B2" "$PID_B" 2>/dev/null || true
  wait "$QPID_B2" 2>/dev/null || true
  wait "$PID_B" 2>/dev/null || true
  PID_B=
  killed_at=$(date +%s.%N)
  sleep 0.2
  SYNCED=$(synced_files B2)
  log "host B (QEMU B2 and server B) killed with SIGKILL; $SYNCED files reported durable; no lock break"
  qemu A3 "$(node_uri A disk)" "hbiss_mode=recover hbiss_files=$SYNCED"
  deadline=$(($(date +%s) + AUTO_LIMIT + 60))
  until grep -a -q 'HBISS-VM-RESULT' "$WORK/A3.console" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || { tail -n 20 "$WORK/A3.console" >&2; fail "the recover boot on A3 did not finish"; }
    kill -0 "$QPID_A3" 2>/dev/null || { cat "$WORK/A3.out" >&2; fail "QEMU A3 exited without a verdict"; }
    sleep 0.5
  done
  took=$(python3 -c "import sys,time;print(round(time.time()-float(sys.argv[1]),1))" "$killed_at")
  verdict=$(grep -a 'HBISS-VM-RESULT' "$WORK/A3.console" | tr -d '\r' | sed 's/^.*HBISS-VM-RESULT: //')
  log "automatic takeover: recover boot on A3: $verdict, $took s after the kill"
  case "$verdict" in
    "PASS mode=recover files=$SYNCED "*) ;;
    *) tail -n 30 "$WORK/A3.console" >&2; fail "recover boot after the automatic takeover: $verdict" ;;
  esac
  python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" \
    "$took" "$AUTO_LIMIT" || fail "the automatic takeover took $took s (limit $AUTO_LIMIT s)"
  CHECKS=$((CHECKS + 2))
  wait "$QPID_A3" 2>/dev/null || true
  grep -q "this server (hbiss-A) owns it now" "$WORK/serve-A.log" ||
    fail "server A never took ownership for the recover boot's writes"
  CHECKS=$((CHECKS + 1))
  wait_owner disk "" "after the recover boot on A3 ended (A released it)"
  stop_node A
else
  stop_node B
fi
log "total $(($(date +%s) - started)) s"
finish
