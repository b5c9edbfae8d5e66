#!/usr/bin/env bash
# fio over NBD against `hbiss serve` on an HDFS store: the same workloads as run.sh, for
# hbiss alone (there is no NBD peer that keeps its disk in HDFS). Prints a markdown table.
#
# Usage: bench/nbd/hdfs-run.sh HDFS_URI [HBISS_BINARY]
#   e.g. scripts/hdfs-cluster start --dir /tmp/hc --base-port 19900 --blocksize 134217728
#        bench/nbd/hdfs-run.sh hdfs://127.0.0.1:19900 build/hbiss
# Env: RUNTIME (s per workload, default 10), SIZE (export size, default 1G), PORT (default
#      19558). The volume lives in <HDFS_URI>/hbiss-nbd-bench, which is removed first.
set -euo pipefail
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
URI=${1:?usage: $0 HDFS_URI [HBISS_BINARY]}
HBISS=$(readlink -f "${2:-$ROOT/build/hbiss}")
RUNTIME=${RUNTIME:-10}
SIZE=${SIZE:-1G}
PORT=${PORT:-19558}
STORE="${URI%/}/hbiss-nbd-bench"
WORK=$(mktemp -d /tmp/hbiss-nbd-hdfs.XXXXXX)
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT

"$HBISS" dfs rm -r -f "$STORE" >/dev/null 2>&1 || true
"$HBISS" dfs mkdir "$STORE" >/dev/null
"$HBISS" --store "$STORE" create vm -s "$SIZE" >/dev/null
"$HBISS" --store "$STORE" serve --listen "127.0.0.1:$PORT" >"$WORK/serve.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
  grep -q "listening on" "$WORK/serve.log" && break
  sleep 0.1
done

echo "- hbiss: $HBISS; store $STORE; fio $(fio --version); export $SIZE, $RUNTIME s per"
echo "  workload after 1 s of ramp, one NBD connection over TCP 127.0.0.1, --randrepeat=0"
echo
echo "| workload | IOPS | MiB/s | mean latency |"
echo "|---|---|---|---|"
run() {
  local name=$1
  shift
  fio --name="$name" --ioengine=nbd --uri="nbd://127.0.0.1:$PORT/vm" --size="$SIZE" \
    --time_based --runtime="$RUNTIME" --ramp_time=1 --randrepeat=0 --output-format=json \
    "$@" >"$WORK/fio.json" 2>"$WORK/fio.err" || { cat "$WORK/fio.err" >&2; exit 1; }
  python3 - "$WORK/fio.json" "$name" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
job = json.loads(text[text.index("{"):])["jobs"][0]
r = job["read"] if job["read"]["io_bytes"] > 0 else job["write"]
print("| %s | %.0f | %.0f | %.0f us |" % (sys.argv[2], r["iops"], r["bw"] / 1024,
                                          r["lat_ns"]["mean"] / 1e3))
PY
}
run seqwrite-1M-qd8 --rw=write --bs=1M --iodepth=8
run seqread-1M-qd8 --rw=read --bs=1M --iodepth=8
run randwrite-4k-qd1 --rw=randwrite --bs=4k --iodepth=1
run randwrite-4k-qd32 --rw=randwrite --bs=4k --iodepth=32
run randwrite-4k-qd32-flush32 --rw=randwrite --bs=4k --iodepth=32 --fsync=32
run randread-4k-qd1 --rw=randread --bs=4k --iodepth=1
run randread-4k-qd32 --rw=randread --bs=4k --iodepth=32
kill -TERM "$PID"
wait "$PID" || true
PID=""
"$HBISS" dfs rm -r -f "$STORE" >/dev/null 2>&1 || true
