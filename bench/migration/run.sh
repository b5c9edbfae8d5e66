#!/usr/bin/env bash
# The I/O pause a guest sees during live migration (issue 9's benchmark).
#
# A guest (tests/vm/init.sh, hbiss_mode=writer) writes and fsyncs small files without pause
# and prints a line per durable file; watch.py timestamps those lines on the host. The guest
# is live-migrated ROUNDS times back and forth between two QEMUs (QMP migrate to a QEMU
# started with -incoming defer). For each migration it reports QEMU's own downtime and the longest
# gap the host saw between two consecutive files across the switchover, against the median
# gap between files away from switchovers (the writer's cadence).
#
# SERVERS=shared (the only mode until issue 9's ownership handoff lands): both QEMUs reach
# one `hbiss serve` on a local store. It is the baseline the two-server mode will be
# compared with.
#
# Usage: bench/migration/run.sh [BUILD_DIR]   (needs hbiss built there, QEMU, busybox-static)
# Env:   ROUNDS (6), SETTLE_FILES (30: files written after each migration before the next),
#        VOLUME_MIB (256), DIR (scratch, default a temp dir; removed at the end).
set -euo pipefail
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(readlink -f "${1:-$ROOT/build}")
HBISS=$BUILD/hbiss
ROUNDS=${ROUNDS:-6}
SETTLE_FILES=${SETTLE_FILES:-30}
VOLUME_MIB=${VOLUME_MIB:-256}
SERVERS=${SERVERS:-shared}
DIR=${DIR:-$(mktemp -d /tmp/hbiss-bench-migration.XXXXXX)}
WORK=$DIR
GUEST_DIR=$BUILD/tests/vm/guest
STEP_TIMEOUT=240
CHECKS=0
QPIDS=()
PID=""
WATCH=""
log() { echo "bench/migration: $*" >&2; }
fail() { echo "bench/migration: FAIL: $*" >&2; exit 1; }
cleanup() {
  touch "$DIR/stop" 2>/dev/null || true
  for p in "${QPIDS[@]}" $WATCH; do kill -KILL "$p" 2>/dev/null || true; done
  if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  if [ "${KEEP:-0}" = 1 ]; then echo "bench/migration: kept $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
[ "$SERVERS" = shared ] || fail "SERVERS=$SERVERS: only 'shared' exists until issue 9 lands"
[ -x "$HBISS" ] || fail "no $HBISS: build first"
source "$ROOT/tests/vm/migration_lib.sh"
bash "$ROOT/tests/vm/prepare_guest.sh" "$GUEST_DIR" >&2

echo "# bench/migration: ROUNDS=$ROUNDS SETTLE_FILES=$SETTLE_FILES VOLUME_MIB=$VOLUME_MIB" \
     "SERVERS=$SERVERS; QEMU $(qemu-system-x86_64 --version | head -n1 | awk '{print $4}')," \
     "TCG, -m 512 -smp 2; hbiss at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
mkdir -p "$DIR/store"
"$HBISS" --store "$DIR/store" create disk -s "${VOLUME_MIB}M" >/dev/null
"$HBISS" --store "$DIR/store" serve --listen 127.0.0.1:0 >"$DIR/serve.log" 2>&1 &
PID=$!
for _ in $(seq 1 200); do
  PORT=$(grep -o 'listening on nbd://127.0.0.1:[0-9]*' "$DIR/serve.log" | head -n1 | sed 's/.*://') || true
  [ -n "${PORT:-}" ] && break
  sleep 0.05
done
[ -n "${PORT:-}" ] || fail "hbiss serve did not start"
DISK="nbd://127.0.0.1:$PORT/disk"

python3 "$HERE/watch.py" "$DIR" "$DIR/times" &
WATCH=$!
qemu G0 "$DISK" "hbiss_mode=writer hbiss_files=1000000"
wait_file G0 "$SETTLE_FILES"
for r in $(seq 1 "$ROUNDS"); do
  MP=$(port_free)
  qemu "G$r" "$DISK" "hbiss_mode=writer hbiss_files=1000000" -- -incoming defer
  migrate "G$((r - 1))" "G$r" "$MP" >&2
  wait_file "G$r" $((MIGRATED_AT + SETTLE_FILES))
done
touch "$DIR/stop"
wait "$WATCH" || true
WATCH=""

python3 - "$DIR" "$ROUNDS" <<'PY'
import json, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
rows = [l.split() for l in open(f"{d}/times")]
seen = {}
for t, n, name in rows:
    seen.setdefault(int(n), (float(t), name))
files = sorted(seen)
gaps_same, switch = [], {}
for a, b in zip(files, files[1:]):
    (ta, ga), (tb, gb) = seen[a], seen[b]
    gap = (tb - ta) * 1000
    if ga == gb:
        gaps_same.append(gap)
    else:
        switch[gb] = gap
print("| migration | QEMU downtime (ms) | longest gap across the switchover (ms) |")
print("|---|---:|---:|")
for r in range(1, rounds + 1):
    info = json.load(open(f"{d}/G{r-1}-to-G{r}.json"))
    print(f"| G{r-1} -> G{r} | {info.get('downtime')} | {switch.get(f'G{r}', float('nan')):.0f} |")
print(f"\nmedian gap between files away from switchovers: {statistics.median(gaps_same):.1f} ms "
      f"(p99 {sorted(gaps_same)[int(len(gaps_same) * 0.99)]:.1f} ms, {len(gaps_same)} gaps)")
PY
