#!/usr/bin/env bash
# Handoff benchmark (issue 9's goal: a handoff between live servers under 500 ms, p99 over
# 100). Two `hbiss serve`s, A and B, on one hdfs:// store, one volume; handoff.py keeps a
# python3-libnbd connection to each and alternates one 4 KiB write + FLUSH through B, then
# A, then B...: every write lands on the server that does not own the volume, so its time
# is one handoff (RELEASE to the owner, which flushes and lets go, then the new owner's new
# epoch and catch-up). Against, in the same run:
#   - a 4 KiB write + FLUSH through A while it owns the volume (no handoff), and
#   - hdfs_bench's 4 KiB write + hflush straight to HDFS (the native client, no hbiss).
# Prints its parameters, p50/p90/p99/max of each, and the ratios; writes results.md,
# params.md and results.json to OUT.
#
# Usage: bench/handoff/run.sh HDFS_URI [BUILD_DIR]
#   e.g. scripts/hdfs-cluster start --dir /tmp/hc --base-port 19900
#        bench/handoff/run.sh hdfs://127.0.0.1:19900 build
# Then, under load: fio writes through A at QD32 while CONTENDED single 4 KiB writes+FLUSH
# go through B, one a second (each takes the volume from a busy owner).
# Env:   HANDOFFS (100), BASELINE (100: owner write+flush rounds), HFLUSH_COUNT (500),
#        CONTENDED (10; 0 skips it),
#        OUT (default bench/handoff/results). The volume lives in
#        <HDFS_URI>/hbiss-handoff-bench-<pid>, removed at the end.
set -euo pipefail
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
URI=${1:?usage: $0 HDFS_URI [BUILD_DIR]}
BUILD=$(readlink -f "${2:-$ROOT/build}")
HBISS=$BUILD/hbiss
HDFS_BENCH=$BUILD/bench/hdfs/hdfs_bench
HANDOFFS=${HANDOFFS:-100}
BASELINE=${BASELINE:-100}
HFLUSH_COUNT=${HFLUSH_COUNT:-500}
CONTENDED=${CONTENDED:-10}
OUT=${OUT:-$HERE/results}
for t in python3 nbdinfo; do
  command -v $t >/dev/null || { echo "bench: $t is not installed" >&2; exit 1; }
done
python3 -c "import nbd" 2>/dev/null || { echo "bench: python3-libnbd is not installed" >&2; exit 1; }
[ -x "$HBISS" ] || { echo "bench: no hbiss binary at $HBISS" >&2; exit 1; }
"$HBISS" serve --help 2>&1 | grep -q -- --peer-listen ||
  { echo "bench: hbiss serve has no --peer-listen (issue 9 not built)" >&2; exit 1; }
DIR=$(mktemp -d /tmp/hbiss-handoff-bench.XXXXXX)
mkdir -p "$OUT"
STORE="${URI%/}/hbiss-handoff-bench-$$"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  "$HBISS" dfs rm -r -f "$STORE" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

build_type=$(grep -s '^CMAKE_BUILD_TYPE:' "$BUILD/CMakeCache.txt" | cut -d= -f2 || true)
[ -n "$build_type" ] || { [ -f "$BUILD/CMakeCache.txt" ] && build_type=RelWithDebInfo; }
sanitize=$(grep -s '^HBISS_SANITIZE:' "$BUILD/CMakeCache.txt" | cut -d= -f2 || true)
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- . 2>/dev/null || commit="$commit (with uncommitted changes)"
{
  echo "## Parameters"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $commit"
  echo "- host: $(nproc) CPUs, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- hbiss: $HBISS (CMAKE_BUILD_TYPE=${build_type:-unknown}, HBISS_SANITIZE=${sanitize:-OFF})"
  echo "- store: $STORE (all daemons and both servers on this host, loopback)"
  echo "- two servers (--server-id A / B, --peer-listen on 127.0.0.1), one 64 MiB volume, one python3-libnbd connection to each over TCP"
  echo "- $HANDOFFS handoffs (alternately B, A, ...: one 4 KiB write, timed, then a FLUSH); baseline: $BASELINE rounds of 4 KiB write + FLUSH through the owner; hdfs_bench --ops hflush --hflush-count $HFLUSH_COUNT (4 KiB write + hflush, native client); under load: $CONTENDED writes+FLUSH through B, one a second, while fio writes through A (randwrite 4k QD32)"
  echo "- command: HANDOFFS=$HANDOFFS BASELINE=$BASELINE HFLUSH_COUNT=$HFLUSH_COUNT CONTENDED=$CONTENDED bench/handoff/run.sh $URI $BUILD"
} | tee "$OUT/params.md"
case "${build_type:-}" in
  Debug|"") echo "WARNING: hbiss is not an optimized build (CMAKE_BUILD_TYPE=${build_type:-unknown})";;
esac
[ "${sanitize:-OFF}" = "ON" ] && echo "WARNING: hbiss was built with sanitizers"

"$HBISS" dfs mkdir "$STORE" >/dev/null
"$HBISS" --store "$STORE" create vm -s 64M >/dev/null
declare -A PORT
for n in A B; do
  peer=$(free_port)
  "$HBISS" --store "$STORE" serve --listen 127.0.0.1:0 --server-id "$n" \
    --peer-listen "127.0.0.1:$peer" >"$DIR/serve$n.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 200); do
    PORT[$n]=$(grep -o 'listening on nbd://127.0.0.1:[0-9]*' "$DIR/serve$n.log" | head -n1 |
               sed 's/.*://') || true
    [ -n "${PORT[$n]}" ] && break
    sleep 0.05
  done
  [ -n "${PORT[$n]}" ] || { echo "bench: server $n did not start" >&2; cat "$DIR/serve$n.log" >&2; exit 1; }
done
epoch() { "$HBISS" --store "$STORE" status vm --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["epoch"])'; }
e0=$(epoch)
t0=$(date +%s.%N)
python3 "$HERE/handoff.py" "nbd://127.0.0.1:${PORT[A]}/vm" "nbd://127.0.0.1:${PORT[B]}/vm" \
  "$HANDOFFS" "$BASELINE" "$DIR/nbd.json" ||
  { echo "bench: handoff.py failed" >&2; tail -n 20 "$DIR/serveA.log" "$DIR/serveB.log" >&2; exit 1; }
t1=$(date +%s.%N)
e1=$(epoch)
# Under load: fio writes through A at QD32 (A owns the volume); single 4 KiB write+FLUSH
# rounds through B, CONTENDED of them, each taking the volume from a busy owner (which takes
# it back with fio's next write).
echo '[]' >"$DIR/contended.json"
if [ "$CONTENDED" -gt 0 ] && command -v fio >/dev/null; then
  fio --name=load --ioengine=nbd --uri="nbd://127.0.0.1:${PORT[A]}/vm" --rw=randwrite --bs=4k \
    --iodepth=32 --size=32M --time_based --runtime=600 --output-format=terse \
    >"$DIR/fio.out" 2>"$DIR/fio.err" &
  FIO=$!
  PIDS+=("$FIO")
  sleep 3
  python3 - "nbd://127.0.0.1:${PORT[B]}/vm" "$CONTENDED" "$DIR/contended.json" <<'PY'
import json, sys, time
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
lat = []
for i in range(int(sys.argv[2])):
    t0 = time.perf_counter()
    h.pwrite(b"C" * 4096, (40 << 20) + i * 4096)
    t1 = time.perf_counter()
    h.flush()
    lat.append([(t1 - t0) * 1000, (time.perf_counter() - t1) * 1000])
    time.sleep(1)
h.shutdown()
json.dump(lat, open(sys.argv[3], "w"))
PY
  kill -TERM "$FIO" 2>/dev/null || true
  wait "$FIO" 2>/dev/null || true
fi
if [ -x "$HDFS_BENCH" ]; then
  "$HDFS_BENCH" --uri "$URI" --path "/hbiss-handoff-bench-$$-hflush" --ops hflush \
    --hflush-count "$HFLUSH_COUNT" --hflush-warmup 50 >"$DIR/hflush.json" 2>"$DIR/hflush.err" ||
    { cat "$DIR/hflush.err" >&2; exit 1; }
  "$HBISS" dfs rm -r -f "/hbiss-handoff-bench-$$-hflush" >/dev/null 2>&1 || true
else
  echo "bench: no $HDFS_BENCH (ninja hdfs_bench): no raw hflush figure" >&2
  echo '{}' >"$DIR/hflush.json"
fi

python3 - "$DIR/nbd.json" "$DIR/hflush.json" "$e0" "$e1" "$t0" "$t1" "$OUT" "$DIR/contended.json" <<'PY'
import json, sys
nbd = json.load(open(sys.argv[1]))
cont = json.load(open(sys.argv[8]))
hf = json.loads(open(sys.argv[2]).read() or "{}")
e0, e1, t0, t1, out = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), sys.argv[7]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def row(name, xs):
    return (f"| {name} | {len(xs)} | {pct(xs, .5):.1f} | {pct(xs, .9):.1f} | {pct(xs, .99):.1f} "
            f"| {max(xs):.1f} |")


h, b = nbd["handoff"], nbd["baseline"]
hand = h["write"]
hand_total = [w + f for w, f in zip(h["write"], h["flush"])]
base_total = [w + f for w, f in zip(b["write"], b["flush"])]
lines = ["## Results", "",
         "| latency (ms) | n | p50 | p90 | p99 | max |", "|---|---:|---:|---:|---:|---:|",
         row("handoff: first 4 KiB write on the new server", hand),
         row("handoff write + its FLUSH", hand_total),
         row("no handoff: 4 KiB write + FLUSH through the owner", base_total)]
ref = None
if hf.get("p50_us"):
    ref = hf["p50_us"] / 1000
    lines.append(f"| HDFS alone: 4 KiB write + hflush (hdfs_bench) | {hf['count']} | {ref:.1f} "
                 f"| | {hf['p99_us'] / 1000:.1f} | {hf['max_us'] / 1000:.1f} |")
if cont:
    lines.append(row("under load: write through B while A serves fio QD32", [c[0] for c in cont]))
lines += ["",
          f"- handoffs: {len(hand)} in {t1 - t0:.1f} s (baseline included); epoch {e0} -> {e1} "
          f"({e1 - e0} changes of owner, {len(hand) + 1} expected); "
          f"{nbd['blocks']} blocks read back through both servers, {nbd['wrong']} wrong",
          f"- handoff p50 / owner write+flush p50: {pct(hand, .5) / pct(base_total, .5):.1f}x; "
          f"p99: {pct(hand, .99) / pct(base_total, .99):.1f}x"]
if ref:
    lines.append(f"- handoff p50 / HDFS hflush p50: {pct(hand, .5) / ref:.1f}x "
                 f"(a handoff costs about {pct(hand, .5) / ref:.0f} hflush round trips)")
by = {}
for s, w in zip(h["server"], hand):
    by.setdefault(s, []).append(w)
lines.append("- handoff p50 by new owner: " + ", ".join(
    f"to {s} {pct(v, .5):.1f} ms (p99 {pct(v, .99):.1f})" for s, v in sorted(by.items())))
p99 = pct(hand, .99)
lines.append(f"- target p99 < 500 ms: {'met' if p99 < 500 else 'NOT met'} ({p99:.1f} ms)")
text = "\n".join(lines)
print(text)
with open(f"{out}/results.md", "w") as f:
    f.write(open(f"{out}/params.md").read() + "\n" + text + "\n")
with open(f"{out}/results.json", "w") as f:
    json.dump({"nbd": nbd, "hflush": hf, "epochs": [e0, e1], "contended": cont}, f)
PY
