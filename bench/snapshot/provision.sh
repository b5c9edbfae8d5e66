#!/usr/bin/env bash
# Provisioning benchmark (issue 10): the time to make COUNT VM disks from one golden image,
# three ways, in the same run, from the same image:
#   hbiss      `hbiss snap create gold@base` + COUNT x `hbiss clone gold@base vmN`
#   overlay    COUNT x `qemu-img create -f qcow2 -b gold.raw -F raw vmN.qcow2`
#   copy       COUNT x `qemu-img convert -f raw -O raw gold.raw vmN.raw` (full copies)
# Each way is timed REPS times from a clean slate (its disks removed, then `sync`), and the
# time includes a final `sync`, so the copies are on disk, not only in the page cache. The
# golden image is SIZE of random data (nothing to compress or skip), written once as
# gold.raw and imported once into the hbiss store (neither is timed). Then the first read:
# one whole pass over one disk with nbdcopy to null:, through `hbiss serve` for clone vm1
# and through `qemu-nbd -r` for overlay vm1.qcow2 and for gold.raw itself (the page cache
# is not dropped: the machine is shared, so every source reads warm).
#
# Usage: bench/snapshot/provision.sh [HBISS_BINARY]
# Env:   SIZE (golden image, default 1G), COUNT (default 10), REPS (default 3), DIR
#        (scratch, default a temp dir under /var/tmp), OUT (default bench/snapshot/results).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
HBISS=$(readlink -f "${1:-$ROOT/build/hbiss}")
SIZE=${SIZE:-1G}
COUNT=${COUNT:-10}
REPS=${REPS:-3}
OUT=${OUT:-$HERE/results}
for t in qemu-img qemu-nbd nbdcopy nbdinfo python3; do
  command -v $t >/dev/null || { echo "bench: $t is not installed" >&2; exit 1; }
done
[ -x "$HBISS" ] || { echo "bench: no hbiss binary at $HBISS" >&2; exit 1; }
DIR=${DIR:-$(mktemp -d /var/tmp/hbiss-provision-bench.XXXXXX)}
mkdir -p "$DIR" "$OUT"
source "$ROOT/bench/lib.sh"
STORE=$DIR/store
mkdir -p "$STORE"
hb() { "$HBISS" --store "$STORE" "$@"; }
now() { date +%s.%N; }
since() { python3 -c 'import sys,time; print("%.3f" % (time.time() - float(sys.argv[1])))' "$1"; }
bytes_of() { du -s --block-size=1 "$@" | awk '{s += $1} END {printf "%.0f\n", s}'; }

build_type=$(grep -s '^CMAKE_BUILD_TYPE:' "$(dirname "$HBISS")/CMakeCache.txt" | cut -d= -f2 || true)
case "$build_type" in
  Release | RelWithDebInfo) ;;
  *) echo "bench: WARNING: $HBISS is a '${build_type:-unknown}' build, not an optimized one" >&2 ;;
esac

echo "bench: writing the $SIZE golden image" >&2
size_bytes=$(python3 -c 'import sys; n=sys.argv[1]; u="KMGT".find(n[-1].upper()); print(int(n[:-1]) << (10*(u+1)) if u >= 0 else int(n))' "$SIZE")
head -c "$size_bytes" /dev/urandom >"$DIR/gold.raw"
hb import gold "$DIR/gold.raw" >/dev/null
sync

# One rep of each way; each prints its seconds.
run_hbiss() {  # REP
  local t0
  t0=$(now)
  hb snap create "gold@base$1" >/dev/null
  for i in $(seq 1 "$COUNT"); do hb clone "gold@base$1" "vm$1-$i" >/dev/null 2>&1; done
  sync
  since "$t0"
}
# run_qemu_img SUBDIR EXT ARGS...: COUNT x `qemu-img ARGS... DIR/SUBDIR/vmN.EXT`.
run_qemu_img() {
  local sub=$1 ext=$2 t0
  shift 2
  t0=$(now)
  for i in $(seq 1 "$COUNT"); do qemu-img "$@" "$DIR/$sub/vm$i.$ext"; done
  sync
  since "$t0"
}

declare -A T
store_before=$(bytes_of "$STORE")
for r in $(seq 1 "$REPS"); do
  echo "bench: rep $r of $REPS" >&2
  T[hbiss,$r]=$(run_hbiss "$r")
  # The hbiss clones of this rep stay (each rep gets its own snapshot); their space is
  # measured after the first rep.
  if [ "$r" -eq 1 ]; then
    store_after=$(bytes_of "$STORE")
    # Clones get their space reserve at their first writable open, not at creation.
    reserve_bytes=$(bytes_of "$STORE"/volumes/vm1-*/reserve 2>/dev/null || echo 0)
  fi
  rm -rf "$DIR/ov" && mkdir -p "$DIR/ov" && sync
  T[overlay,$r]=$(run_qemu_img ov qcow2 create -q -f qcow2 -b "$DIR/gold.raw" -F raw)
  ov_bytes=$(bytes_of "$DIR/ov")
  rm -rf "$DIR/cp" && mkdir -p "$DIR/cp" && sync
  T[copy,$r]=$(run_qemu_img cp raw convert -f raw -O raw "$DIR/gold.raw")
  cp_bytes=$(bytes_of "$DIR/cp")
  [ "$r" -eq "$REPS" ] || rm -rf "$DIR/cp"
done
rm -rf "$DIR/cp"
hb_bytes=$((store_after - store_before))

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
reps_of() { local r; for r in $(seq 1 "$REPS"); do printf '%s ' "${T[$1,$r]}"; done; }
M_hbiss=$(median $(reps_of hbiss))
M_overlay=$(median $(reps_of overlay))
M_copy=$(median $(reps_of copy))

# ---- first read: one whole pass over one disk ------------------------------------------------
port=$(free_port)
"$HBISS" --store "$STORE" serve --listen "127.0.0.1:$port" >"$DIR/serve.log" 2>&1 &
PID=$!
wait_port "$port" vm1-1
read_secs() {  # URI or [ CMD ]...: seconds for nbdcopy of the whole disk to null:
  local t0
  t0=$(now)
  nbdcopy "$@" null:
  since "$t0"
}
R_clone=$(read_secs "nbd://127.0.0.1:$port/vm1-1")
kill -TERM "$PID"
wait "$PID" || { echo "bench: hbiss serve exited with an error" >&2; exit 1; }
PID=""
R_overlay=$(read_secs -- [ qemu-nbd -r -f qcow2 "$DIR/ov/vm1.qcow2" ])
R_raw=$(read_secs -- [ qemu-nbd -r -f raw "$DIR/gold.raw" ])

# ---- report ---------------------------------------------------------------------------------
ratio() { python3 -c 'import sys; a, b = map(float, sys.argv[1:]); print("%.1fx" % (a / b) if b > 0 else "-")' "$1" "$2"; }
mib() { python3 -c 'import sys; print("%.1f MiB" % (int(sys.argv[1]) / 1048576))' "$1"; }
{
  echo "## Parameters"
  echo
  echo "- date: $(date -u +%FT%TZ)"
  echo "- host: $(nproc) CPUs, $(uname -r); $(qemu-img --version | head -n1)"
  echo "- hbiss: $HBISS (${build_type:-unknown build type}), local store in $DIR"
  echo "- golden image: $SIZE ($size_bytes bytes) of random data; $COUNT disks per way; $REPS reps, median shown"
  echo "- each time includes a final sync; the page cache is warm (not dropped)"
  echo "- command: SIZE=$SIZE COUNT=$COUNT REPS=$REPS bench/snapshot/provision.sh $HBISS"
  echo
  echo "## Provisioning $COUNT disks from the golden image"
  echo
  echo "| way | seconds (median) | per disk | reps | space added | time vs hbiss |"
  echo "|---|---|---|---|---|---|"
  for w in hbiss overlay copy; do
    eval "m=\$M_$w"
    case $w in
      hbiss) what="hbiss snap create + $COUNT x hbiss clone"; b=$hb_bytes ;;
      overlay) what="$COUNT x qemu-img create -f qcow2 -b"; b=$ov_bytes ;;
      copy) what="$COUNT x qemu-img convert (full copy)"; b=$cp_bytes ;;
    esac
    per=$(python3 -c 'import sys; print("%.4f" % (float(sys.argv[1]) / int(sys.argv[2])))' "$m" "$COUNT")
    echo "| $what | $m | $per | $(reps_of $w)| $(mib "$b") | $(ratio "$m" "$M_hbiss") |"
  done
  echo
  echo "A clone gets its space reserve (doc/volume_meta.md, the local store's) at its first writable"
  echo "open, not at creation: $(( ${reserve_bytes:-0} )) bytes of reserve files after the first rep."
  echo
  echo "## First read: nbdcopy of one whole disk to null:"
  echo
  echo "| disk | seconds | vs the raw golden image |"
  echo "|---|---|---|"
  echo "| hbiss clone vm1-1 (hbiss serve) | $R_clone | $(ratio "$R_clone" "$R_raw") |"
  echo "| qcow2 overlay vm1 (qemu-nbd -r) | $R_overlay | $(ratio "$R_overlay" "$R_raw") |"
  echo "| gold.raw (qemu-nbd -r) | $R_raw | 1.0x |"
} | tee "$OUT/provision.md"
echo "bench: results in $OUT/provision.md" >&2
