#!/usr/bin/env bash
# Live migration of a running guest whose disk is an hbiss volume, with real QEMUs and QMP.
#
# The guest runs the writer workload (init.sh, hbiss_mode=writer): it writes and fsyncs
# files without pause and prints `HBISS-VM-FILE i` once file i is durable. While it runs:
#   1. QEMU A -> QEMU B (started with -incoming): QMP `migrate`; A must end `postmigrate`, B
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
# SERVERS=shared (this script's default, and the only mode until issue 9's ownership
# lands): both sides' QEMUs reach one `hbiss serve`. The longest gap between two files
# seen on the consoles around each switchover is printed (the pause the guest saw).
#
# Usage: migration_test.sh HBISS_BINARY GUEST_CACHE_DIR
# Exits 77 (skipped) when QEMU or the guest kernel is unavailable, unless HBISS_REQUIRE_VM=1.
TEST_NAME=vm_migration
GUEST_DIR=${2:?usage: $0 HBISS_BINARY GUEST_CACHE_DIR}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../nbd/lib.sh"
log() { echo "[$TEST_NAME $(date +%T.%N | cut -c1-12)] $*"; }

FILES=${HBISS_MIGRATION_FILES:-400}
STEP_TIMEOUT=${HBISS_MIGRATION_STEP_TIMEOUT:-240}
VOLUME_MIB=256
QPIDS=()
EXTRA_CLEANUP='for p in "${QPIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done'

unavailable() {
  if [ "${HBISS_REQUIRE_VM:-0}" = 1 ]; then
    fail "$* (HBISS_REQUIRE_VM=1, so this is a failure, not a skip)"
  fi
  skip "$* (set HBISS_REQUIRE_VM=1 to make this a failure)"
}
for t in qemu-system-x86_64 busybox python3 timeout; do
  command -v "$t" >/dev/null 2>&1 ||
    unavailable "$t is not installed (scripts/deps.sh installs it)"
done
rc=0
bash "$HERE/prepare_guest.sh" "$GUEST_DIR" || rc=$?
if [ $rc -eq 77 ]; then
  unavailable "no guest kernel: see the prepare_guest message above"
elif [ $rc -ne 0 ]; then
  fail "prepare_guest.sh failed (exit $rc)"
fi
started=$(date +%s)

qmp() { python3 "$HERE/qmp.py" "$WORK/$1.qmp" "${@:2}"; }

# qemu NAME URI KERNEL_ARGS [-- QEMU_ARGS...]: starts a guest in the background, its serial
# console in $WORK/NAME.console and QMP on $WORK/NAME.qmp. Every side of a migration must
# get the same machine, so the command line differs only in QEMU_ARGS (-incoming).
qemu() {
  local name=$1 disk=$2 append=$3
  shift 3
  [ "${1:-}" = -- ] && shift
  qemu-system-x86_64 -machine q35,accel=tcg -cpu max -m 512 -smp 2 -no-reboot \
    -display none -monitor none -serial "file:$WORK/$name.console" \
    -qmp "unix:$WORK/$name.qmp,server=on,wait=off" \
    -kernel "$GUEST_DIR/vmlinuz" -initrd "$GUEST_DIR/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 loglevel=4 $append" \
    -drive "file=$disk,format=raw,if=virtio,cache=none,discard=unmap,werror=stop,rerror=stop" \
    -nic none "$@" </dev/null >"$WORK/$name.out" 2>&1 &
  QPIDS+=($!)
  eval "QPID_$name=$!"
  for _ in $(seq 1 200); do
    [ -S "$WORK/$name.qmp" ] && return 0
    sleep 0.05
  done
  cat "$WORK/$name.out" >&2
  fail "QEMU $name did not open its QMP socket"
}

last_file() { { grep -a -o 'HBISS-VM-FILE [0-9]*' "$WORK/$1.console" 2>/dev/null || true; } |
              tail -n 1 | awk '{print $2}'; }

# wait_file NAME N: waits until guest NAME's console shows file N (or a later one).
wait_file() {
  local name=$1 n=$2 deadline=$(($(date +%s) + STEP_TIMEOUT)) got
  while :; do
    got=$(last_file "$name")
    [ -n "$got" ] && [ "$got" -ge "$n" ] && return 0
    if grep -a -q 'HBISS-VM-RESULT' "$WORK/$name.console" 2>/dev/null; then
      tail -n 20 "$WORK/$name.console" >&2
      fail "guest $name ended before file $n"
    fi
    [ "$(date +%s)" -lt "$deadline" ] || fail "guest $name did not reach file $n (at ${got:-0})"
    sleep 0.2
  done
}

status_of() { qmp "$1" query-status | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])'; }

port_free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# migrate SRC DST: SRC's guest moves to the new QEMU DST (started with -incoming).
migrate() {
  local src=$1 dst=$2 mport=$3 t0 before
  before=$(last_file "$src")
  t0=$(date +%s.%N)
  qmp "$src" migrate "{\"uri\": \"tcp:127.0.0.1:$mport\"}" >/dev/null || fail "migrate $src -> $dst"
  qmp "$src" --wait-migration completed "$STEP_TIMEOUT" >"$WORK/$src-to-$dst.json" ||
    fail "migration $src -> $dst did not complete"
  local s
  s=$(status_of "$src")
  [ "$s" = postmigrate ] || fail "after the migration, $src is '$s', not postmigrate"
  for _ in $(seq 1 100); do
    s=$(status_of "$dst")
    [ "$s" = running ] && break
    sleep 0.05
  done
  [ "$s" = running ] || fail "after the migration, $dst is '$s', not running"
  log "migrated $src -> $dst in $(python3 -c 'import sys, time; print(round(time.time() - float(sys.argv[1]), 2))' "$t0") s at file $before" \
      "(downtime $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("downtime"))' \
      "$WORK/$src-to-$dst.json") ms)"
  MIGRATED_AT=$(last_file "$src")
  qmp "$src" quit >/dev/null 2>&1 || true
  CHECKS=$((CHECKS + 2))
}

hbiss create disk -s ${VOLUME_MIB}M >/dev/null
start_server
DISK=$(uri disk)

# ---- A runs the writer; A -> B -------------------------------------------------------------
qemu A "$DISK" "hbiss_mode=writer hbiss_files=$FILES"
wait_file A 20
MP=$(port_free)
qemu B "$DISK" "hbiss_mode=writer hbiss_files=$FILES" -- -incoming "tcp:127.0.0.1:$MP"
migrate A B "$MP"
wait_file B $((MIGRATED_AT + 20))
log "the writer goes on on B (file $(last_file B))"

# ---- B -> A2 (back) ------------------------------------------------------------------------
MP=$(port_free)
qemu A2 "$DISK" "hbiss_mode=writer hbiss_files=$FILES" -- -incoming "tcp:127.0.0.1:$MP"
migrate B A2 "$MP"
wait_file A2 $((MIGRATED_AT + 20))
log "the writer goes on on A2 (file $(last_file A2))"

# ---- A2 -> B2, cancelled at switchover -------------------------------------------------------
MP=$(port_free)
qemu B2 "$DISK" "hbiss_mode=writer hbiss_files=$FILES" -- -incoming "tcp:127.0.0.1:$MP"
qmp A2 migrate-set-capabilities \
  '{"capabilities": [{"capability": "pause-before-switchover", "state": true}]}' >/dev/null ||
  fail "pause-before-switchover"
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

# ---- a fresh guest verifies the volume -------------------------------------------------------
qemu V "$DISK" "hbiss_mode=verify hbiss_files=$FILES hbiss_sums=$SUMS"
deadline=$(($(date +%s) + STEP_TIMEOUT))
until grep -a -q 'HBISS-VM-RESULT' "$WORK/V.console"; do
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

log "total $(($(date +%s) - started)) s"
finish
