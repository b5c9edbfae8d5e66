# Live-migration helpers shared by tests/vm/migration_test.sh and bench/migration/run.sh.
# Source after defining WORK (scratch directory), GUEST_DIR (prepare_guest.sh's output),
# STEP_TIMEOUT (seconds), QPIDS (an array the caller kills on exit), CHECKS (a counter),
# log MESSAGE and fail MESSAGE. The guest runs tests/vm/init.sh.
HERE_VM=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

qmp() { python3 "$HERE_VM/qmp.py" "$WORK/$1.qmp" "${@:2}"; }

# qemu NAME URI KERNEL_ARGS [-- QEMU_ARGS...]: starts a guest in the background, its serial
# console in $WORK/NAME.console and QMP on $WORK/NAME.qmp. Every side of a migration must
# get the same machine, so the command line differs only in QEMU_ARGS (-incoming defer).
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

# incoming NAME PORT: the QEMU NAME (started with `-incoming defer`) listens for the
# migration stream on 127.0.0.1:PORT once this returns (QMP migrate-incoming sets the
# listener up before it replies, so the source never finds the port closed).
incoming() {
  qmp "$1" migrate-incoming "{\"uri\": \"tcp:127.0.0.1:$2\"}" >/dev/null ||
    fail "migrate-incoming on $1"
}

# migrate SRC DST PORT: SRC's guest moves to the new QEMU DST (started with
# `-incoming defer`), through 127.0.0.1:PORT. SRC quits once it is over, unless
# MIGRATE_KEEP_SOURCE=1: then it stays (paused, postmigrate, its NBD connection open, as a
# source does until management kills it) and the caller quits it. MIGRATED_AT is the last
# file SRC reported; MIGRATED_T the time the migration completed (seconds since the epoch).
migrate() {
  local src=$1 dst=$2 mport=$3 t0 before
  incoming "$dst" "$mport"
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
  MIGRATED_T=$(date +%s.%N)
  [ "${MIGRATE_KEEP_SOURCE:-0}" = 1 ] || qmp "$src" quit >/dev/null 2>&1 || true
  CHECKS=$((CHECKS + 2))
}

