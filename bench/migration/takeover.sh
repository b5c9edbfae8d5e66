#!/usr/bin/env bash
# Takeover time after a host dies (issue 9's benchmark), on the real HDFS cluster.
#
# Two servers on one hdfs:// store, as two hosts: A (--server-id bench-A) and B (bench-B).
# A client writes and flushes through A without pause (64 KiB writes, a FLUSH every 16), so
# A owns the volume and has a segment open. A is killed with SIGKILL; at once a client of B
# writes 4 KiB and flushes. The time from the kill to that write's acknowledgement is the
# takeover time:
#   explicit   `hbiss lock break VOL` is run right after the kill (the operator knows A is
#              dead); REPEAT_EXPLICIT times (default 5)
#   automatic  no break: B's write waits until A's HDFS lease expires (the NameNode's soft
#              limit, 60 s after A's last renewal) and B takes the volume by itself;
#              REPEAT_AUTO times (default 1)
# Prints its parameters, then one line per run and a summary table.
#
# Usage: bench/migration/takeover.sh [BUILD_DIR]   (needs HBISS_HDFS_URI, python3-libnbd)
# Env:   REPEAT_EXPLICIT (5), REPEAT_AUTO (1), VOLUME_MIB (64), WRITE_S (3: seconds A writes
#        before the kill), AUTO_TIMEOUT (150 s: the longest an automatic takeover may take),
#        DIR (scratch dir), KEEP=1 keeps it.
set -euo pipefail
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(readlink -f "${1:-$ROOT/build}")
HBISS=$BUILD/hbiss
REPEAT_EXPLICIT=${REPEAT_EXPLICIT:-5}
REPEAT_AUTO=${REPEAT_AUTO:-1}
VOLUME_MIB=${VOLUME_MIB:-64}
WRITE_S=${WRITE_S:-3}
AUTO_TIMEOUT=${AUTO_TIMEOUT:-150}
DIR=${DIR:-$(mktemp -d /tmp/hbiss-bench-takeover.XXXXXX)}
PIDS=()
log() { echo "bench/takeover: $*" >&2; }
fail() { echo "bench/takeover: FAIL: $*" >&2; exit 1; }
[ -n "${HBISS_HDFS_URI:-}" ] || fail "HBISS_HDFS_URI is not set (start scripts/hdfs-cluster)"
[ -x "$HBISS" ] || fail "no $HBISS: build first"
STORE="${HBISS_HDFS_URI%/}/hbiss-bench-takeover-$(date +%s)-$$"
cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  "$HBISS" dfs rm -r -f "$STORE" >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then echo "bench/takeover: kept $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
h() { "$HBISS" --store "$STORE" "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# node NAME: starts server bench-NAME; sets PORT_NAME and PID_NAME.
node() {
  local log=$DIR/serve-$1-$RUN.log port
  # Not through h(): $! must be the server itself, which the kill -9 below hits.
  "$HBISS" --store "$STORE" serve --listen 127.0.0.1:0 --server-id "bench-$1" \
    --peer-listen "127.0.0.1:$(free_port)" >"$log" 2>&1 &
  eval "PID_$1=$!"
  PIDS+=($!)
  for _ in $(seq 1 200); do
    port=$(grep -o 'listening on nbd://127.0.0.1:[0-9]*' "$log" 2>/dev/null | head -n1 | sed 's/.*://') || true
    [ -n "$port" ] && { eval "PORT_$1=$port"; return 0; }
    sleep 0.05
  done
  fail "server $1 did not start"
}

debug=""
grep -q 'CMAKE_BUILD_TYPE:STRING=Release' "$BUILD/CMakeCache.txt" 2>/dev/null ||
  debug=" WARNING: not a Release build"
echo "# bench/takeover: REPEAT_EXPLICIT=$REPEAT_EXPLICIT REPEAT_AUTO=$REPEAT_AUTO" \
     "VOLUME_MIB=$VOLUME_MIB WRITE_S=$WRITE_S; store $HBISS_HDFS_URI;" \
     "hbiss at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?');$debug"
"$HBISS" dfs mkdir "$STORE" >/dev/null

RUN=0
results=()
one() {  # one explicit|automatic
  local how=$1 vol
  RUN=$((RUN + 1))
  vol=v$RUN
  h create "$vol" -s "${VOLUME_MIB}M" >/dev/null
  node A
  node B
  # A's client: writes and flushes until A is gone.
  python3 - "nbd://127.0.0.1:$PORT_A/$vol" <<'PY' >"$DIR/hammer-$RUN.log" 2>&1 &
import os, random, sys, nbd
h = nbd.NBD(); h.connect_uri(sys.argv[1])
size, rng, n = h.get_size(), random.Random(1), 0
try:
    while True:
        h.pwrite(os.urandom(65536), rng.randrange(size // 65536) * 65536)
        n += 1
        if n % 16 == 0:
            h.flush()
except nbd.Error as e:
    print(f"A's client: {n} writes, then {e}")
PY
  local hammer=$!
  sleep "$WRITE_S"
  kill -KILL "$PID_A"
  local t0
  t0=$(python3 -c 'import time; print(time.time())')
  # B's client: one write + flush, timed from the kill.
  python3 - "nbd://127.0.0.1:$PORT_B/$vol" "$t0" <<'PY' >"$DIR/first-$RUN.out" 2>&1 &
import sys, time, nbd
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(b"\xb0" * 4096, 0)
h.flush()
print(f"{time.time() - float(sys.argv[2]):.3f}")
PY
  local first=$!
  local brk="-"
  if [ "$how" = explicit ]; then
    h lock break "$vol" >"$DIR/break-$RUN.out" 2>&1 || { cat "$DIR/break-$RUN.out" >&2; fail "lock break"; }
    brk=$(python3 -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.3f}")' "$t0")
  fi
  local waited=0
  while kill -0 "$first" 2>/dev/null; do
    [ "$waited" -lt $((AUTO_TIMEOUT * 10)) ] || { kill -KILL "$first"; fail "$how: no takeover within $AUTO_TIMEOUT s"; }
    sleep 0.1
    waited=$((waited + 1))
  done
  wait "$first" || { cat "$DIR/first-$RUN.out" >&2; fail "$how: B's write failed"; }
  wait "$hammer" 2>/dev/null || true
  local took
  took=$(tail -n 1 "$DIR/first-$RUN.out")
  # (B's client is gone by now, so B has closed the volume and released it: its log says it
  # owned it.)
  grep -q "this server (bench-B) owns it now" "$DIR/serve-B-$RUN.log" ||
    fail "$how: B served the write but never logged owning the volume"
  log "run $RUN $how: kill -9 -> B's first write acknowledged in $took s (lock break returned at $brk s; $(tail -n 1 "$DIR/hammer-$RUN.log"))"
  results+=("$how $took $brk")
  kill -TERM "$PID_B" 2>/dev/null || true
  wait "$PID_B" 2>/dev/null || true
}
for _ in $(seq 1 "$REPEAT_EXPLICIT"); do one explicit; done
for _ in $(seq 1 "$REPEAT_AUTO"); do one automatic; done

printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
rows = {}
for line in sys.stdin:
    how, took, brk = line.split()
    rows.setdefault(how, []).append((float(took), brk))
print("| takeover | runs | kill -9 -> first write on B (s): median | min | max | lock break returned (s, median) |")
print("|---|---:|---:|---:|---:|---:|")
for how, r in rows.items():
    t = [x for x, _ in r]
    b = [float(y) for _, y in r if y != "-"]
    print(f"| {how} | {len(t)} | {statistics.median(t):.2f} | {min(t):.2f} | {max(t):.2f} | "
          f"{statistics.median(b):.2f} |" if b else
          f"| {how} | {len(t)} | {statistics.median(t):.2f} | {min(t):.2f} | {max(t):.2f} | - |")
'
