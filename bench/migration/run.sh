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
# SERVERS=shared: both QEMUs reach one `hbiss serve`: the baseline.
# SERVERS=two (issue 9): QEMUs G0, G2, ... reach server A (--server-id bench-A), G1, G3, ...
# server B (bench-B), two servers on one store with their own --peer-listen address, as two
# hosts: every migration also moves write ownership (the destination's first write asks the
# source's server to release the volume). After each migration `hbiss status` must name the
# destination's server.
# SERVERS=both runs shared, then two, and prints both tables.
# The store is HBISS_HDFS_URI (a fresh directory) when set, else a local directory.
# takeover.sh (beside this script) times takeovers after a host dies.
#
# Usage: bench/migration/run.sh [BUILD_DIR]   (needs hbiss built there, QEMU, busybox-static)
# Env:   ROUNDS (6), SETTLE_FILES (30: files written after each migration before the next),
#        VOLUME_MIB (256), SERVERS (shared | two | both), DIR (scratch, default a temp dir;
#        removed at the end).
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
if [ "$SERVERS" = both ]; then
  SERVERS=shared "$0" "$@"
  exec env SERVERS=two "$0" "$@"
fi
DIR=${DIR:-$(mktemp -d /tmp/hbiss-bench-migration.XXXXXX)}
WORK=$DIR
GUEST_DIR=$BUILD/tests/vm/guest
STEP_TIMEOUT=240
CHECKS=0
QPIDS=()
PID=""
PID_B=""
WATCH=""
log() { echo "bench/migration: $*" >&2; }
fail() { echo "bench/migration: FAIL: $*" >&2; exit 1; }
cleanup() {
  touch "$DIR/stop" 2>/dev/null || true
  for p in "${QPIDS[@]}" $WATCH; do kill -KILL "$p" 2>/dev/null || true; done
  # The servers are not this shell's children (serve runs in $(...)): poll until they exit.
  for p in $PID $PID_B; do
    kill -TERM "$p" 2>/dev/null || continue
    for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  case "$STORE" in hdfs://*) "$HBISS" dfs rm -r -f "$STORE" >/dev/null 2>&1 || true ;; esac
  if [ "${KEEP:-0}" = 1 ]; then echo "bench/migration: kept $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
case "$SERVERS" in shared | two) ;; *) fail "SERVERS=$SERVERS: shared, two or both" ;; esac
if [ -n "${HBISS_HDFS_URI:-}" ]; then
  STORE="${HBISS_HDFS_URI%/}/hbiss-bench-migration-$(date +%s)-$$"
else
  STORE=$DIR/store
fi
[ -x "$HBISS" ] || fail "no $HBISS: build first"
source "$ROOT/tests/vm/migration_lib.sh"
bash "$ROOT/tests/vm/prepare_guest.sh" "$GUEST_DIR" >&2

debug=""
grep -q 'CMAKE_BUILD_TYPE:STRING=Release' "$BUILD/CMakeCache.txt" 2>/dev/null ||
  debug=" WARNING: not a Release build"
echo "# bench/migration: ROUNDS=$ROUNDS SETTLE_FILES=$SETTLE_FILES VOLUME_MIB=$VOLUME_MIB" \
     "SERVERS=$SERVERS; store ${STORE%%://*}; QEMU $(qemu-system-x86_64 --version | head -n1 | awk '{print $4}')," \
     "TCG, -m 512 -smp 2; hbiss at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?');$debug"
case "$STORE" in hdfs://*) "$HBISS" dfs mkdir "$STORE" >/dev/null ;; *) mkdir -p "$STORE" ;; esac
"$HBISS" --store "$STORE" create disk -s "${VOLUME_MIB}M" >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# serve NAME: starts server bench-NAME; prints its NBD port; its pid in $DIR/NAME.pid.
serve() {
  local port
  if [ "$SERVERS" = two ]; then
    "$HBISS" --store "$STORE" serve --listen 127.0.0.1:0 --server-id "bench-$1" \
      --peer-listen "127.0.0.1:$(free_port)" >"$DIR/serve-$1.log" 2>&1 &
  else
    "$HBISS" --store "$STORE" serve --listen 127.0.0.1:0 >"$DIR/serve-$1.log" 2>&1 &
  fi
  echo $! >"$DIR/$1.pid"
  for _ in $(seq 1 200); do
    port=$(grep -o 'listening on nbd://127.0.0.1:[0-9]*' "$DIR/serve-$1.log" 2>/dev/null | head -n1 | sed 's/.*://') || true
    [ -n "$port" ] && { echo "$port"; return 0; }
    sleep 0.05
  done
  fail "hbiss serve $1 did not start"
}
PORT=$(serve A)
PID=$(cat "$DIR/A.pid")
DISKS=("nbd://127.0.0.1:$PORT/disk")
OWNERS=(bench-A)
if [ "$SERVERS" = two ]; then
  PORT_B=$(serve B)
  PID_B=$(cat "$DIR/B.pid")
  DISKS+=("nbd://127.0.0.1:$PORT_B/disk")
  OWNERS+=(bench-B)
else
  DISKS+=("${DISKS[0]}")
fi
owner() {
  "$HBISS" --store "$STORE" status disk --json |
    python3 -c 'import json,sys; o=json.load(sys.stdin)["owner"]; print(o["server"] if o else "-")'
}

python3 "$HERE/watch.py" "$DIR" "$DIR/times" &
WATCH=$!
qemu G0 "${DISKS[0]}" "hbiss_mode=writer hbiss_files=1000000"
wait_file G0 "$SETTLE_FILES"
for r in $(seq 1 "$ROUNDS"); do
  MP=$(port_free)
  qemu "G$r" "${DISKS[$((r % 2))]}" "hbiss_mode=writer hbiss_files=1000000" -- -incoming defer
  MIGRATE_KEEP_SOURCE=1 migrate "G$((r - 1))" "G$r" "$MP" >&2
  wait_file "G$r" $((MIGRATED_AT + SETTLE_FILES))
  # The source quits only now: in the two-server mode the destination's first write had to
  # ask the source's server (which still had the volume open) to release it.
  qmp "G$((r - 1))" quit >/dev/null 2>&1 || true
  if [ "$SERVERS" = two ]; then
    o=$(owner)
    [ "$o" = "${OWNERS[$((r % 2))]}" ] || fail "after G$((r - 1)) -> G$r hbiss status names '$o', not ${OWNERS[$((r % 2))]}"
  fi
done
touch "$DIR/stop"
wait "$WATCH" || true
WATCH=""

python3 - "$DIR" "$ROUNDS" "$SERVERS" <<'PY'
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
print(f"SERVERS={sys.argv[3]}")
print("| migration | QEMU downtime (ms) | longest gap across the switchover (ms) |")
print("|---|---:|---:|")
for r in range(1, rounds + 1):
    info = json.load(open(f"{d}/G{r-1}-to-G{r}.json"))
    print(f"| G{r-1} -> G{r} | {info.get('downtime')} | {switch.get(f'G{r}', float('nan')):.0f} |")
print(f"\nmedian gap between files away from switchovers: {statistics.median(gaps_same):.1f} ms "
      f"(p99 {sorted(gaps_same)[int(len(gaps_same) * 0.99)]:.1f} ms, {len(gaps_same)} gaps)")
PY
