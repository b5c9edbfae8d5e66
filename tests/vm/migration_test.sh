#!/usr/bin/env bash
# Live migration of a running guest whose disk is an hbiss volume, with real QEMUs and QMP.
#
# The guest runs the writer workload (init.sh, hbiss_mode=writer): it writes and fsyncs
# files without pause and prints `HBISS-VM-FILE i` once file i is durable. While it runs:
#   1. QEMU A -> QEMU B (started with -incoming defer): QMP `migrate`; A must end `postmigrate`, B
#      `running`, and the writer must go on on B;
#   2. B -> A2 (migration back to the first side);
#   3. A2 -> B2 cancelled at switchover (capability pause-before-switchover, then
#      `migrate_cancel` in state pre-switchover): A2 must be `running` again and the writer
#      must go on there; B2 is discarded.
# The writer then unmounts, runs e2fsck -fn, verifies every file against its list and
# prints PASS. A fresh verify boot (a new QEMU, a new NBD connection) checks the list and
# every file again, and the HBISS-VM-FILE lines of all consoles must cover 1..FILES with no
# file missing.
#
# Servers (HBISS_MIGRATION_SERVERS):
#   two (the default; issue 9): two `hbiss serve` on one hdfs:// store, as two hosts, each
#       with its own --server-id (hbiss-A, hbiss-B) and --peer-listen address. QEMU A and
#       A2 reach server A, QEMU B and B2 server B. The destination reads while paused
#       (ownership must stay with the source's server) and its first write moves write
#       ownership to its own server. `hbiss status --json` must name the server whose QEMU
#       runs and writes: hbiss-A before, hbiss-B after A -> B, hbiss-A after B -> A2, and
#       still hbiss-A after the cancelled A2 -> B2. The verify boot goes through a third
#       server C.
#   shared: every QEMU reaches one `hbiss serve` (hbiss-A) on the same kind of store.
# Both run on the HDFS cluster (HBISS_HDFS_URI; skipped without it unless
# HBISS_REQUIRE_HDFS=1). The time each migration took and QEMU's downtime are printed.
#
# Usage: migration_test.sh HBISS_BINARY GUEST_CACHE_DIR
# Exits 77 (skipped) when QEMU or the guest kernel is unavailable, unless HBISS_REQUIRE_VM=1,
# or when this hbiss has no multi-server ownership (issue 9) yet.
TEST_NAME=vm_migration
GUEST_DIR=${2:?usage: $0 HBISS_BINARY GUEST_CACHE_DIR}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../nbd/lib.sh"
log() { echo "[$TEST_NAME $(date +%T.%N | cut -c1-12)] $*"; }

FILES=${HBISS_MIGRATION_FILES:-400}
STEP_TIMEOUT=${HBISS_MIGRATION_STEP_TIMEOUT:-240}
SERVERS=${HBISS_MIGRATION_SERVERS:-two}
VOLUME_MIB=256
QPIDS=()
EXTRA_CLEANUP='for p in "${QPIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done;
  "$HBISS" dfs rm -r -f "$STORE" >/dev/null 2>&1'

case "$SERVERS" in two | shared) ;; *) fail "HBISS_MIGRATION_SERVERS=$SERVERS: two or shared" ;; esac
if [ -z "${HBISS_HDFS_URI:-}" ]; then
  [ "${HBISS_REQUIRE_HDFS:-0}" = 1 ] && fail "HBISS_REQUIRE_HDFS=1 but HBISS_HDFS_URI is not set"
  skip "HBISS_HDFS_URI is not set (no live HDFS cluster)"
fi
need_ownership
source "$HERE/guest_lib.sh"
need_guest qemu-system-x86_64 busybox python3 timeout
started=$(date +%s)
log "SERVERS=$SERVERS FILES=$FILES"

source "$HERE/migration_lib.sh"
# Each source stays (postmigrate, its connection open) until the destination has written:
# in the two-server mode the destination's server must then ask the source's to release.
MIGRATE_KEEP_SOURCE=1
RESUME_LIMIT=${HBISS_MIGRATION_RESUME_LIMIT:-30}
# resumed DST: the writer's next file on DST must appear within RESUME_LIMIT seconds of the
# migration (ownership moved at once: no wait for the source's HDFS lease, ~60 s).
resumed() {
  local t=$STEP_TIMEOUT took
  STEP_TIMEOUT=$RESUME_LIMIT
  wait_file "$1" $((MIGRATED_AT + 1))
  STEP_TIMEOUT=$t
  took=$(python3 -c "import sys,time;print(round(time.time()-float(sys.argv[1]),2))" "$MIGRATED_T")
  log "the first file on $1 after the migration came $took s after it completed"
  CHECKS=$((CHECKS + 1))
}

HDFS_DIR="/hbiss-migration-$(date +%s)-$$"
STORE="${HBISS_HDFS_URI%/}$HDFS_DIR"
"$HBISS" dfs mkdir "$STORE" >/dev/null || fail "cannot create $STORE"
hbiss create disk -s ${VOLUME_MIB}M >/dev/null
start_node A
if [ "$SERVERS" = two ]; then
  start_node B
  SIDE_B=B
else
  SIDE_B=A
fi
DISK_A=$(node_uri A disk)
DISK_B=$(node_uri "$SIDE_B" disk)

# ---- A runs the writer; A -> B -------------------------------------------------------------
qemu A "$DISK_A" "hbiss_mode=writer hbiss_files=$FILES"
wait_file A 20
expect_owner disk hbiss-A "while QEMU A writes"
MP=$(port_free)
qemu B "$DISK_B" "hbiss_mode=writer hbiss_files=$FILES" -- -incoming defer
wait_file A $(($(last_file A) + 3))
expect_owner disk hbiss-A "QEMU B connected and reads while paused: ownership stays"
migrate A B "$MP"
resumed B
wait_file B $((MIGRATED_AT + 20))
log "the writer goes on on B (file $(last_file B))"
expect_owner disk "hbiss-$SIDE_B" "after A -> B, while QEMU B writes (and A still has it open)"
qmp A quit >/dev/null 2>&1 || true

# ---- B -> A2 (back) ------------------------------------------------------------------------
MP=$(port_free)
qemu A2 "$DISK_A" "hbiss_mode=writer hbiss_files=$FILES" -- -incoming defer
migrate B A2 "$MP"
resumed A2
wait_file A2 $((MIGRATED_AT + 20))
log "the writer goes on on A2 (file $(last_file A2))"
expect_owner disk hbiss-A "after B -> A2, while QEMU A2 writes (and B still has it open)"
qmp B quit >/dev/null 2>&1 || true

# ---- A2 -> B2, cancelled at switchover -------------------------------------------------------
MP=$(port_free)
qemu B2 "$DISK_B" "hbiss_mode=writer hbiss_files=$FILES" -- -incoming defer
qmp A2 migrate-set-capabilities \
  '{"capabilities": [{"capability": "pause-before-switchover", "state": true}]}' >/dev/null ||
  fail "pause-before-switchover"
incoming B2 "$MP"
qmp A2 migrate "{\"uri\": \"tcp:127.0.0.1:$MP\"}" >/dev/null || fail "migrate A2 -> B2"
qmp A2 --wait-migration pre-switchover "$STEP_TIMEOUT" >/dev/null ||
  fail "A2 -> B2 did not reach pre-switchover"
paused_at=$(last_file A2)
log "A2 -> B2 paused at pre-switchover at file $paused_at"
qmp A2 migrate_cancel >/dev/null || fail "migrate_cancel"
qmp A2 --wait-migration cancelled "$STEP_TIMEOUT" >/dev/null || fail "the migration was not cancelled"
for _ in $(seq 1 100); do
  s=$(status_of A2)
  [ "$s" = running ] && break
  sleep 0.05
done
[ "$s" = running ] || fail "after the cancelled migration A2 is '$s', not running"
log "A2 -> B2 cancelled; A2 runs"
# B2's incoming migration failed, so it exits by itself; make sure it is gone.
kill -TERM "$QPID_B2" 2>/dev/null || true
wait "$QPID_B2" 2>/dev/null || true
CHECKS=$((CHECKS + 2))
wait_file A2 $((${paused_at:-0} + 20))
log "cancelled at switchover at file $paused_at; the writer goes on on A2 (file $(last_file A2))"
expect_owner disk hbiss-A "after the cancelled A2 -> B2, while QEMU A2 writes"

# ---- the writer's verdict -------------------------------------------------------------------
deadline=$(($(date +%s) + STEP_TIMEOUT * 2))
until grep -a -q 'HBISS-VM-RESULT' "$WORK/A2.console"; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "the writer did not finish on A2 (at $(last_file A2))"
  sleep 0.5
done
verdict=$(grep -a 'HBISS-VM-RESULT' "$WORK/A2.console" | tr -d '\r' | sed 's/^.*HBISS-VM-RESULT: //')
log "writer: $verdict"
case "$verdict" in
  "PASS mode=writer files=$FILES "*) ;;
  *) tail -n 30 "$WORK/A2.console" >&2; fail "writer: $verdict" ;;
esac
SUMS=$(echo "$verdict" | sed -n 's/.* sums=\([0-9a-f]*\).*/\1/p')
CHECKS=$((CHECKS + 1))
wait "$QPID_A2" || true

# Every file shows up once on some console, in order, with none missing.
cat "$WORK/A.console" "$WORK/B.console" "$WORK/A2.console" | tr -d '\r' |
  grep -a -o 'HBISS-VM-FILE [0-9]*' | awk '{print $2}' >"$WORK/files"
python3 - "$WORK/files" "$FILES" <<'PY' || fail "the consoles' file lines do not cover 1..$FILES"
import sys
seen = [int(l) for l in open(sys.argv[1]) if l.strip()]
want = list(range(1, int(sys.argv[2]) + 1))
assert seen == want, f"got {len(seen)} lines; first difference near {next((i for i, (a, b) in enumerate(zip(seen, want)) if a != b), len(seen))}"
PY
CHECKS=$((CHECKS + 1))

# ---- a fresh guest verifies the volume through a third server --------------------------------
if [ "$SERVERS" = two ]; then
  start_node C
  DISK_V=$(node_uri C disk)
else
  DISK_V=$DISK_A
fi
qemu V "$DISK_V" "hbiss_mode=verify hbiss_files=$FILES hbiss_sums=$SUMS"
deadline=$(($(date +%s) + STEP_TIMEOUT))
until grep -a -q 'HBISS-VM-RESULT' "$WORK/V.console" 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "the verify boot did not finish"
  sleep 0.5
done
verdict=$(grep -a 'HBISS-VM-RESULT' "$WORK/V.console" | tr -d '\r' | sed 's/^.*HBISS-VM-RESULT: //')
case "$verdict" in
  "PASS mode=verify files=$FILES sums=$SUMS "*) ;;
  *) tail -n 30 "$WORK/V.console" >&2; fail "verify boot: $verdict" ;;
esac
log "verify boot: $verdict"
CHECKS=$((CHECKS + 1))

# ---- `hbiss export` (a read-only open in another process) holds the same bytes --------------
check "hbiss export of the volume" hbiss export disk "$WORK/disk.img"
python3 - "$WORK/disk.img" "$WORK/served.img" "$DISK_V" <<'PY' || fail "the export differs from what the server serves"
import subprocess, sys
subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", sys.argv[3], sys.argv[2]],
               check=True)
a, b = open(sys.argv[1], "rb"), open(sys.argv[2], "rb")
off = 0
while True:
    x, y = a.read(1 << 20), b.read(1 << 20)
    if x != y:
        sys.exit(f"differ in the MiB at {off}")
    if not x:
        break
    off += len(x)
PY
CHECKS=$((CHECKS + 1))
for n in A B C; do
  [ "$SERVERS" = two ] || [ $n = A ] || continue
  stop_node $n
done
log "total $(($(date +%s) - started)) s"
finish
