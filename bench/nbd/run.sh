#!/usr/bin/env bash
# NBD benchmark: fio (--ioengine=nbd, one TCP connection on 127.0.0.1) against
#   hbiss serve on a local store, qemu-nbd on a raw file, qemu-nbd on a qcow2
#   file (all in the same directory, so the same filesystem), and nbdkit
#   memory (the loopback ceiling).
# Workloads: 1 MiB sequential write and read at QD8, 4 KiB randwrite and
# randread at QD1 and QD32, and 4 KiB randwrite at QD32 with a FLUSH every 32
# writes (fio --fsync=32 sends NBD_CMD_FLUSH).
# Prints its parameters, a markdown table with ratios, and writes
# results.md, results.json and chart.png to OUT.
#
# Usage: bench/nbd/run.sh [HBISS_BINARY]
# Env:   RUNTIME (s per workload, default 10), SIZE (export size, default 1G),
#        DIR (where the store and image files live, default a temp dir under
#        /var/tmp), OUT (default bench/nbd/results), SERVERS (subset, default
#        "hbiss qemu-raw qemu-qcow2 nbdkit-memory"; also hbiss-metrics: hbiss with
#        --metrics-listen, scraped every second as Prometheus would, for the
#        cost of metrics: bench/nbd/metrics.sh), RAW_PREALLOC (qemu-img
#        preallocation of the raw file: off, falloc or full; default full).
set -euo pipefail
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
HBISS=$(readlink -f "${1:-$ROOT/build/hbiss}")
RUNTIME=${RUNTIME:-10}
SIZE=${SIZE:-1G}
OUT=${OUT:-$HERE/results}
SERVERS=${SERVERS:-"hbiss qemu-raw qemu-qcow2 nbdkit-memory"}
RAW_PREALLOC=${RAW_PREALLOC:-full}
for t in fio qemu-nbd qemu-img nbdkit python3; do
  command -v $t >/dev/null || { echo "bench: $t is not installed" >&2; exit 1; }
done
[ -x "$HBISS" ] || { echo "bench: no hbiss binary at $HBISS" >&2; exit 1; }
DIR=${DIR:-$(mktemp -d /var/tmp/hbiss-nbd-bench.XXXXXX)}
mkdir -p "$DIR" "$OUT"
source "$ROOT/bench/lib.sh"

build_type=$(grep -s '^CMAKE_BUILD_TYPE:' "$(dirname "$HBISS")/CMakeCache.txt" | cut -d= -f2 || true)
# The top-level CMakeLists.txt defaults an empty CMAKE_BUILD_TYPE to RelWithDebInfo.
[ -n "$build_type" ] || { [ -f "$(dirname "$HBISS")/CMakeCache.txt" ] && build_type=RelWithDebInfo; }
sanitize=$(grep -s '^HBISS_SANITIZE:' "$(dirname "$HBISS")/CMakeCache.txt" | cut -d= -f2 || true)
{
  echo "## Parameters"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- host: $(nproc) CPUs, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "- filesystem of DIR: $(df -T "$DIR" | awk 'NR==2 {print $2}')"
  echo "- fio $(fio --version | sed 's/fio-//'), $(qemu-nbd --version | head -n1), $(nbdkit --version)"
  echo "- hbiss: $HBISS (CMAKE_BUILD_TYPE=${build_type:-unknown}, HBISS_SANITIZE=${sanitize:-OFF})"
  echo "- export size $SIZE, $RUNTIME s per workload, one NBD connection over TCP 127.0.0.1"
  echo "- qemu-nbd: --cache=writeback --aio=threads --discard=unmap -e 4; raw file preallocation=$RAW_PREALLOC; qcow2 made by qemu-img create (defaults)"
  echo "- command: RUNTIME=$RUNTIME SIZE=$SIZE SERVERS=\"$SERVERS\" bench/nbd/run.sh $HBISS"
} | tee "$OUT/params.md"
case "${build_type:-}" in
  Debug|"") echo "WARNING: hbiss is not an optimized build (CMAKE_BUILD_TYPE=${build_type:-unknown})";;
esac
[ "${sanitize:-OFF}" = "ON" ] && echo "WARNING: hbiss was built with sanitizers"

# name rw bs iodepth extra
WORKLOADS=(
  "seqwrite-1M-qd8 write 1M 8"
  "seqread-1M-qd8 read 1M 8"
  "randwrite-4k-qd1 randwrite 4k 1"
  "randwrite-4k-qd32 randwrite 4k 32"
  "randwrite-4k-qd32-flush32 randwrite 4k 32 --fsync=32"
  "randread-4k-qd1 randread 4k 1"
  "randread-4k-qd32 randread 4k 32"
)

start_server() {  # sets PID, PORT, EXPORT
  PORT=$(free_port)
  case $1 in
    hbiss)
      mkdir -p "$DIR/store"
      "$HBISS" --store "$DIR/store" create vm -s "$SIZE" >/dev/null
      "$HBISS" --store "$DIR/store" serve --listen "127.0.0.1:$PORT" >"$DIR/hbiss.log" 2>&1 &
      PID=$!; EXPORT=vm;;
    hbiss-metrics)
      mkdir -p "$DIR/store"
      "$HBISS" --store "$DIR/store" create vm -s "$SIZE" >/dev/null
      MPORT=$(free_port)
      "$HBISS" --store "$DIR/store" serve --listen "127.0.0.1:$PORT" \
        --metrics-listen "127.0.0.1:$MPORT" >"$DIR/hbiss.log" 2>&1 &
      PID=$!; EXPORT=vm
      # Scraped every second, as a Prometheus with scrape_interval 1s would.
      (while kill -0 "$PID" 2>/dev/null && sleep 1; do
        curl -s "http://127.0.0.1:$MPORT/metrics" >/dev/null || true
      done) &
      SCRAPER=$!;;
    qemu-raw)
      # Fully preallocated, so qemu-nbd pays no filesystem block allocation.
      qemu-img create -q -f raw -o preallocation="$RAW_PREALLOC" "$DIR/disk.raw" "$SIZE"
      qemu-nbd -f raw -b 127.0.0.1 -p "$PORT" -x vm -t -e 4 --cache=writeback --aio=threads \
        --discard=unmap "$DIR/disk.raw" &
      PID=$!; EXPORT=vm;;
    qemu-qcow2)
      qemu-img create -q -f qcow2 "$DIR/disk.qcow2" "$SIZE"
      qemu-nbd -f qcow2 -b 127.0.0.1 -p "$PORT" -x vm -t -e 4 --cache=writeback --aio=threads \
        --discard=unmap "$DIR/disk.qcow2" &
      PID=$!; EXPORT=vm;;
    nbdkit-memory)
      nbdkit -f -i 127.0.0.1 -p "$PORT" -e vm memory "$SIZE" &
      PID=$!; EXPORT=vm;;
  esac
  wait_port "$PORT" "$EXPORT"
}

stop_server() {
  if [ -n "${SCRAPER:-}" ]; then kill "$SCRAPER"; wait "$SCRAPER" 2>/dev/null || true; SCRAPER=""; fi
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  rm -rf "$DIR/store" "$DIR/disk.raw" "$DIR/disk.qcow2"
}

: >"$DIR/all.jsonl"
for s in $SERVERS; do
  start_server "$s"
  for w in "${WORKLOADS[@]}"; do
    set -- $w
    name=$1 rw=$2 bs=$3 qd=$4
    shift 4
    fio --name="$name" --ioengine=nbd --uri="nbd://127.0.0.1:$PORT/$EXPORT" --rw="$rw" \
      --bs="$bs" --iodepth="$qd" --size="$SIZE" --time_based --runtime="$RUNTIME" \
      --ramp_time=1 --randrepeat=0 --output-format=json "$@" >"$DIR/fio.json" 2>"$DIR/fio.err" ||
      { cat "$DIR/fio.err" >&2; echo "bench: fio failed on $s/$name" >&2; exit 1; }
    python3 - "$DIR/fio.json" "$s" "$name" >>"$DIR/all.jsonl" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])["jobs"][0]
d = j["write"] if j["write"]["io_bytes"] > 0 else j["read"]
print(json.dumps({"server": sys.argv[2], "workload": sys.argv[3], "iops": d["iops"],
                  "mib_s": d["bw_bytes"] / 2**20, "lat_us": d["lat_ns"]["mean"] / 1000}))
PY
    tail -n1 "$DIR/all.jsonl"
  done
  stop_server
done

python3 - "$DIR/all.jsonl" "$OUT" <<'PY'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
out = sys.argv[2]
servers = []
for r in rows:
    if r["server"] not in servers:
        servers.append(r["server"])
workloads = []
for r in rows:
    if r["workload"] not in workloads:
        workloads.append(r["workload"])
val = {(r["server"], r["workload"]): r for r in rows}

def metric(s, w):
    r = val.get((s, w))
    if r is None:
        return None
    return r["mib_s"] if w.startswith("seq") else r["iops"]

def fmt(w, v):
    if v is None:
        return "-"
    return "%.0f MiB/s" % v if w.startswith("seq") else "%.0f" % v

hdr = ["workload"] + servers
ratio_cols = []
if "hbiss" in servers and "qemu-raw" in servers:
    ratio_cols.append(("hbiss / qemu-raw", "qemu-raw"))
if "hbiss" in servers and "nbdkit-memory" in servers:
    ratio_cols.append(("hbiss / nbdkit-memory", "nbdkit-memory"))
# The cost of metrics: hbiss-metrics against hbiss (columns "A / B" are metric(A) / metric(B)).
if "hbiss" in servers and "hbiss-metrics" in servers:
    ratio_cols.append(("hbiss-metrics / hbiss", "hbiss"))
lines = ["| " + " | ".join(hdr + [c for c, _ in ratio_cols]) + " |",
         "|" + "---|" * (len(hdr) + len(ratio_cols))]
for w in workloads:
    cells = [w] + [fmt(w, metric(s, w)) for s in servers]
    for col, base in ratio_cols:
        a, b = metric(col.split(" / ")[0], w), metric(base, w)
        cells.append("%.2fx" % (a / b) if a and b else "-")
    lines.append("| " + " | ".join(cells) + " |")
table = "\n".join(lines)
targets = {"randwrite-4k-qd32": 1.2, "randwrite-4k-qd32-flush32": 1.5, "randread-4k-qd32": 0.9,
           "randread-4k-qd1": 0.9, "seqwrite-1M-qd8": 0.9, "seqread-1M-qd8": 0.9,
           "randwrite-4k-qd1": 1.2}
tl = []
for w, t in targets.items():
    a, b = metric("hbiss", w), metric("qemu-raw", w)
    if a and b:
        tl.append("- %s: hbiss/qemu-raw = %.2fx (target >= %.1fx): %s"
                  % (w, a / b, t, "met" if a / b >= t else "NOT met"))
text = ("## Results (IOPS for 4 KiB, MiB/s for 1 MiB)\n\n" + table + "\n\n## Targets\n\n" +
        "\n".join(tl) + "\n")
print(text)
params = open(os.path.join(out, "params.md")).read()
open(os.path.join(out, "results.md"), "w").write(params + "\n" + text)
json.dump(rows, open(os.path.join(out, "results.json"), "w"), indent=1)
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib is not installed (apt-get install python3-matplotlib): no chart")
    sys.exit(0)
fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [5, 2]})
groups = [[w for w in workloads if not w.startswith("seq")], [w for w in workloads if w.startswith("seq")]]
for ax, ws, unit in zip(axes, groups, ["IOPS", "MiB/s"]):
    width = 0.8 / max(1, len(servers))
    for i, s in enumerate(servers):
        xs = [k + i * width for k in range(len(ws))]
        ax.bar(xs, [metric(s, w) or 0 for w in ws], width, label=s)
    ax.set_xticks([k + width * (len(servers) - 1) / 2 for k in range(len(ws))])
    ax.set_xticklabels([w.replace("-", "\n", 1) for w in ws], fontsize=8)
    ax.set_ylabel(unit)
    ax.grid(axis="y", alpha=0.3)
axes[0].legend(fontsize=8)
fig.suptitle("fio over NBD (loopback TCP): hbiss vs qemu-nbd raw/qcow2 vs nbdkit memory")
fig.tight_layout()
fig.savefig(os.path.join(out, "chart.png"), dpi=110)
print("wrote %s" % os.path.join(out, "chart.png"))
PY
