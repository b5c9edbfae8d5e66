#!/usr/bin/env bash
# Scale benchmarks (issue 8): hbiss at the sizes real hosts run. Two parts:
#
#  many  Many volumes in one `hbiss serve` (local store, Unix socket). VOLUMES
#        thin volumes of VOLUME_SIZE are created; bench/scale/many_volumes.py
#        (python3-libnbd, one client process, PARALLEL threads, one connection
#        per volume) writes WRITE_MIB MiB to each in 1 MiB requests and
#        flushes. After each of MILESTONES volumes it samples the server's
#        VmRSS, VmHWM, threads and open descriptors. Three runs, each on a
#        fresh store and server:
#          keep      every connection stays open (all volumes open at once);
#          close     each connection closes after its flush (the server closes
#                    a volume when its last client leaves);
#          keep-fdN  as keep, with the server under `ulimit -n FD_LIMIT`, and
#                    FD_VOLUMES volumes of FD_WRITE_MIB MiB (more volumes than
#                    the others, little data each: it is about descriptors).
#        If `hbiss serve --help` lists --memory-limit, MEMORY_LIMIT is passed
#        and printed as the budget; otherwise the budget is "none".
#  big   build/bench/scale/hbiss_scale_bench: a BIG_SIZE thin volume with
#        BIG_WRITE of 4 KiB random writes in process: checkpoint bytes and
#        encode time, write latency during a checkpoint against without one,
#        extent map memory, and recovery time after kill -9 for each log size
#        in RECOVERY_LOGS (see scale_bench.cc).
#
# Prints every parameter, and writes to OUT (default bench/scale/results/):
# params.md, many-<run>.jsonl, many-<run>-server.log (its last lines),
# big-volume.txt, big-volume.json and summary.md (the tables for the README).
#
# Usage: bench/scale/run.sh [BUILD_DIR]       (default build/; needs hbiss and
#        bench/scale/hbiss_scale_bench built there)
#        QUICK=1 bench/scale/run.sh           (a few minutes: 20 volumes of
#        16 MiB, 1 GiB written to the big volume)
# Env:   PARTS ("many big"), RUNS ("keep close keep-fd"), VOLUMES (200),
#        FD_VOLUMES (400), FD_WRITE_MIB (1), FD_MILESTONES (1,100,200,300,400),
#        VOLUME_SIZE (1G), WRITE_MIB (32), MILESTONES (1,10,50,100,200),
#        PARALLEL (2), FD_LIMIT (1024), MEMORY_LIMIT (2G, hbiss serve's default; only
#        if supported),
#        MIN_AVAIL_MIB (3072: stop a run when the host has less available),
#        BIG_SIZE (1T), BIG_WRITE (8G), CKPT_INTERVAL (1G), RATE (20000
#        writes/s), FLUSH_EVERY (256), RECOVERY_LOGS (0,256M,1G,2G),
#        DIR (scratch, default a temp dir under /var/tmp; removed at the end),
#        OUT (bench/scale/results).
set -euo pipefail
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(readlink -f "${1:-$ROOT/build}")
HBISS=$BUILD/hbiss
BENCH=$BUILD/bench/scale/hbiss_scale_bench
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  : "${VOLUMES:=20}" "${WRITE_MIB:=16}" "${MILESTONES:=1,10,20}" "${BIG_WRITE:=1G}"
  : "${CKPT_INTERVAL:=256M}" "${RECOVERY_LOGS:=0,256M,512M}"
fi
PARTS=${PARTS:-"many big"}
RUNS=${RUNS:-"keep close keep-fd"}
VOLUMES=${VOLUMES:-200}
VOLUME_SIZE=${VOLUME_SIZE:-1G}
WRITE_MIB=${WRITE_MIB:-32}
MILESTONES=${MILESTONES:-1,10,50,100,200}
PARALLEL=${PARALLEL:-2}
FD_LIMIT=${FD_LIMIT:-1024}
FD_VOLUMES=${FD_VOLUMES:-400}
FD_WRITE_MIB=${FD_WRITE_MIB:-1}
FD_MILESTONES=${FD_MILESTONES:-1,100,200,300,400}
MEMORY_LIMIT=${MEMORY_LIMIT:-2G}
MIN_AVAIL_MIB=${MIN_AVAIL_MIB:-3072}
BIG_SIZE=${BIG_SIZE:-1T}
BIG_WRITE=${BIG_WRITE:-8G}
CKPT_INTERVAL=${CKPT_INTERVAL:-1G}
RATE=${RATE:-20000}
FLUSH_EVERY=${FLUSH_EVERY:-256}
RECOVERY_LOGS=${RECOVERY_LOGS:-0,256M,1G,2G}
OUT=${OUT:-$HERE/results}
PY=/usr/bin/python3  # Debian's, which has python3-libnbd
for t in "$HBISS" "$BENCH"; do
  [ -x "$t" ] || { echo "bench: $t is not built (ninja -C $BUILD hbiss hbiss_scale_bench)" >&2; exit 1; }
done
"$PY" -c 'import nbd' 2>/dev/null || { echo "bench: python3-libnbd is not installed" >&2; exit 1; }
DIR=${DIR:-$(mktemp -d /var/tmp/hbiss-scale-bench.XXXXXX)}
mkdir -p "$DIR" "$OUT"
source "$ROOT/bench/lib.sh"

build_type=$(grep -s '^CMAKE_BUILD_TYPE:' "$BUILD/CMakeCache.txt" | cut -d= -f2 || true)
[ -n "$build_type" ] || { [ -f "$BUILD/CMakeCache.txt" ] && build_type=RelWithDebInfo; }
sanitize=$(grep -s '^HBISS_SANITIZE:' "$BUILD/CMakeCache.txt" | cut -d= -f2 || true)
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- . 2>/dev/null || commit="$commit (with uncommitted changes)"
mem_flag=()
if "$HBISS" serve --help 2>&1 | grep -q -- '--memory-limit'; then
  mem_flag=(--memory-limit "$MEMORY_LIMIT")
  # doc/memory.md: half for write buffers, a quarter each for CRC tables and
  # the read cache.
  mem_bytes=$(numfmt --from=iec "$MEMORY_LIMIT")
  budget="$MEMORY_LIMIT (hbiss serve --memory-limit $MEMORY_LIMIT: write buffers $(numfmt --to=iec $((mem_bytes / 2))), CRC tables $(numfmt --to=iec $((mem_bytes / 4))), read cache $(numfmt --to=iec $((mem_bytes / 4))) (used on HDFS only); extent maps outside it)"
else
  budget="none: this hbiss serve has no --memory-limit"
fi
cmd="QUICK=$QUICK PARTS=\"$PARTS\" RUNS=\"$RUNS\" VOLUMES=$VOLUMES VOLUME_SIZE=$VOLUME_SIZE WRITE_MIB=$WRITE_MIB MILESTONES=$MILESTONES PARALLEL=$PARALLEL FD_LIMIT=$FD_LIMIT FD_VOLUMES=$FD_VOLUMES FD_WRITE_MIB=$FD_WRITE_MIB FD_MILESTONES=$FD_MILESTONES BIG_SIZE=$BIG_SIZE BIG_WRITE=$BIG_WRITE CKPT_INTERVAL=$CKPT_INTERVAL RATE=$RATE FLUSH_EVERY=$FLUSH_EVERY RECOVERY_LOGS=$RECOVERY_LOGS bench/scale/run.sh $BUILD"
{
  echo "## Parameters"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $commit"
  echo "- host: $(nproc) CPUs, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- filesystem of DIR ($DIR): $(df -T "$DIR" | awk 'NR==2 {print $2}')"
  echo "- hbiss: $HBISS (CMAKE_BUILD_TYPE=${build_type:-unknown}, HBISS_SANITIZE=${sanitize:-OFF})"
  echo "- many volumes: $VOLUMES volumes of $VOLUME_SIZE (thin), $WRITE_MIB MiB written to each in 1 MiB requests then FLUSH, one python3-libnbd client process with $PARALLEL threads, one connection per volume over a Unix socket; samples after $MILESTONES volumes; runs: $RUNS; server descriptor limit $(ulimit -n) (keep-fd run: $FD_LIMIT, with $FD_VOLUMES volumes of $FD_WRITE_MIB MiB, samples after $FD_MILESTONES); stop below $MIN_AVAIL_MIB MiB MemAvailable"
  echo "- server memory budget: $budget"
  echo "- big volume: $BIG_SIZE thin, $BIG_WRITE of 4 KiB random writes at $RATE writes/s (open loop), Flush every $FLUSH_EVERY writes, checkpoint_interval $CKPT_INTERVAL; recovery after kill -9 with $RECOVERY_LOGS of log since the newest checkpoint"
  echo "- command: $cmd"
} | tee "$OUT/params.md"
case "${build_type:-}" in
  Debug|"") echo "WARNING: hbiss is not an optimized build (CMAKE_BUILD_TYPE=${build_type:-unknown})";;
esac
[ "${sanitize:-OFF}" = "ON" ] && echo "WARNING: hbiss was built with sanitizers"

# many_run NAME FD_LIMIT MODE VOLUMES WRITE_MIB MILESTONES
many_run() {
  local name=$1 fdlim=$2 mode=$3 nvol=$4 wmib=$5 miles=$6 store=$DIR/store-$1 sock=$DIR/$1.sock
  echo
  echo "### many volumes, run $name: mode $mode, server ulimit -n $fdlim, $nvol volumes of $wmib MiB"
  rm -f "$OUT/many-$name".*  "$OUT/many-$name"-*
  rm -rf "$store"; mkdir -p "$store"
  : >"$DIR/names"
  for i in $(seq 1 "$nvol"); do
    n=$(printf 'v%04d' "$i")
    "$HBISS" --store "$store" create "$n" --size "$VOLUME_SIZE" >/dev/null
    echo "$n" >>"$DIR/names"
  done
  bash -c 'ulimit -n "$1"; shift; exec "$@"' limit "$fdlim" \
    "$HBISS" --store "$store" serve --socket "$sock" "${mem_flag[@]}" >"$DIR/$name.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 200); do [ -S "$sock" ] && break; sleep 0.05; done
  [ -S "$sock" ] || { cat "$DIR/$name.log" >&2; echo "bench: server did not come up" >&2; exit 1; }
  : >"$OUT/many-$name.jsonl"
  "$PY" "$HERE/many_volumes.py" --socket "$sock" --server-pid "$PID" --names "$DIR/names" \
    --mode "$mode" --write-mib "$wmib" --parallel "$PARALLEL" --milestones "$miles" \
    --min-avail-mib "$MIN_AVAIL_MIB" --out "$OUT/many-$name.jsonl" >/dev/null
  local t0 t1 rc=0
  t0=$(date +%s.%N)
  if kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; fi
  wait "$PID" || rc=$?
  t1=$(date +%s.%N)
  PID=""
  local errs emfile
  errs=$(grep -c -E '\[(error|warning)\]' "$DIR/$name.log" || true)
  emfile=$(grep -c -i 'too many open files' "$DIR/$name.log" || true)
  "$PY" -c 'import json,sys; print(json.dumps({"event":"server_exit","exit_code":int(sys.argv[1]),"shutdown_s":float(sys.argv[2]),"log_errors_warnings":int(sys.argv[3]),"log_emfile":int(sys.argv[4]),"fd_limit":int(sys.argv[5])}))' \
    "$rc" "$(awk "BEGIN {print $t1 - $t0}")" "$errs" "$emfile" "$fdlim" >>"$OUT/many-$name.jsonl"
  echo "  server exit $rc after SIGTERM in $(awk "BEGIN {printf \"%.1f\", $t1 - $t0}") s; log: $errs errors/warnings, $emfile 'too many open files'"
  { grep -E '\[(error|warning)\]' "$DIR/$name.log" | head -n 20; tail -n 5 "$DIR/$name.log"; } \
    >"$OUT/many-$name-server.log" || true
  rm -rf "$store"
}

for part in $PARTS; do
  case $part in
    big) rm -f "$OUT"/big-volume.*;;
  esac
done
for part in $PARTS; do
  case $part in
    many)
      for r in $RUNS; do
        case $r in
          keep) many_run keep "$(ulimit -n)" keep "$VOLUMES" "$WRITE_MIB" "$MILESTONES";;
          close) many_run close "$(ulimit -n)" close "$VOLUMES" "$WRITE_MIB" "$MILESTONES";;
          keep-fd) many_run "keep-fd$FD_LIMIT" "$FD_LIMIT" keep "$FD_VOLUMES" "$FD_WRITE_MIB" \
                     "$FD_MILESTONES";;
          *) echo "bench: unknown run $r" >&2; exit 2;;
        esac
      done;;
    big)
      echo
      echo "### big volume"
      "$BENCH" --dir "$DIR/big" --size "$BIG_SIZE" --write "$BIG_WRITE" \
        --checkpoint-interval "$CKPT_INTERVAL" --rate "$RATE" --flush-every "$FLUSH_EVERY" \
        --recovery-logs "$RECOVERY_LOGS" --json "$OUT/big-volume.json" | tee "$OUT/big-volume.txt"
      rm -rf "$DIR/big";;
    *) echo "bench: unknown part $part" >&2; exit 2;;
  esac
done

"$PY" "$HERE/summarize.py" "$OUT" "$commit" "$budget" | tee "$OUT/summary.md"
