#!/usr/bin/env bash
# hbiss's native HDFS client against the stock Java client, through their APIs, on one
# cluster in one run (issue #4's benchmark): sequential write and read of N MiB (default
# 1024) and the latency of 4 KiB write+hflush (p50/p99). Prints both clients' numbers and
# the hbiss/Java ratios (>1 means hbiss is faster; for latency, <1 means hbiss is faster).
#
# Uses the cluster in --cluster-dir when given (e.g. the dev cluster), otherwise starts a
# private one (4 DataNodes, replication 3, 128 MiB blocks) and stops it at the end.
#
# Usage: bench/hdfs/native-vs-java.sh [--mib 1024] [--bench build/bench/hdfs/hdfs_bench]
#                                     [--cluster-dir DIR] [--base-port P] [--rounds 1]
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cluster="$repo_root/scripts/hdfs-cluster"
mib=1024
bench="$repo_root/build/bench/hdfs/hdfs_bench"
cdir=""
port=$((24000 + RANDOM % 80 * 100))
rounds=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --mib) mib=$2; shift 2 ;;
    --bench) bench=$2; shift 2 ;;
    --cluster-dir) cdir=$2; shift 2 ;;
    --base-port) port=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--mib N] [--bench PATH] [--cluster-dir DIR] [--base-port P]" \
            "[--rounds R]" >&2; exit 2 ;;
  esac
done
[[ -x "$bench" ]] || { echo "native-vs-java: no hdfs_bench at $bench (build target hdfs_bench)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/hbiss-hdfs-nvj.XXXXXX")
own_cluster=0
if [[ -z "$cdir" ]]; then
  cdir="$work/cluster"
  own_cluster=1
  echo "native-vs-java: starting a private cluster on port $port" >&2
  "$cluster" start --dir "$cdir" --base-port "$port" --blocksize 134217728 > /dev/null
fi
cleanup() {
  if [[ $own_cluster == 1 ]]; then "$cluster" stop --dir "$cdir" > /dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
uri=$("$cluster" uri --dir "$cdir")

for ((r = 1; r <= rounds; r++)); do
  # Alternate the order so neither client always runs on a warmer cluster.
  if ((r % 2 == 1)); then order="hbiss java"; else order="java hbiss"; fi
  for who in $order; do
    if [[ $who == hbiss ]]; then
      "$bench" --uri "$uri" --path /bench/hbiss --mib "$mib" >> "$work/results.jsonl"
    else
      "$repo_root/bench/hdfs/run-java.sh" "$cdir" --mib "$mib" --path /bench/java \
        --ops write,read,hflush >> "$work/results.jsonl" 2> "$work/java.err" ||
        { cat "$work/java.err" >&2; exit 1; }
    fi
  done
done
[[ -n "${OUT_DIR:-}" ]] && cp "$work/results.jsonl" "$OUT_DIR/hdfs-native-vs-java.jsonl"

python3 - "$work/results.jsonl" "$mib" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def vals(client, op, key):
    return [r[key] for r in rows if r["client"] == client and r["op"] == op]
def med(v):
    return statistics.median(v) if v else float("nan")
print(f"HDFS client benchmark, {sys.argv[2]} MiB sequential, 4 KiB hflush (median of rounds)")
print(f"{'':22}{'hbiss':>12}{'java':>12}{'hbiss/java':>12}")
for op in ("write", "read"):
    h, j = med(vals("hbiss", op, "mib_per_s")), med(vals("java", op, "mib_per_s"))
    print(f"{op + ' MiB/s':22}{h:12.1f}{j:12.1f}{h / j:12.2f}")
for key in ("p50_us", "p99_us"):
    h, j = med(vals("hbiss", "hflush", key)), med(vals("java", "hflush", key))
    print(f"{'hflush ' + key:22}{h:12.1f}{j:12.1f}{h / j:12.2f}")
print("per round:")
for client in ("hbiss", "java"):
    for op, key in (("write", "mib_per_s"), ("read", "mib_per_s"), ("hflush", "p50_us"),
                    ("hflush", "p99_us")):
        v = vals(client, op, key)
        print(f"  {client:6} {op + ' ' + key:18} " + " ".join(f"{x:9.1f}" for x in v))
PY
