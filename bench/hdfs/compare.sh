#!/usr/bin/env bash
# Sequential HDFS throughput, hbiss's native client against the stock Java client, on one
# private cluster in one run (issue #4's benchmark). Measures:
#   java-api   bench/hdfs/java/HdfsBench (FileSystem API, data from memory): write, read, and
#              hflush latency of 4 KiB appends (p50/p99)
#   fsshell    `hdfs dfs -put FILE` and `hdfs dfs -cat > /dev/null` (JVM start included)
#   hbiss      `hbiss dfs put FILE` and `hbiss dfs cat > /dev/null`, when `hbiss dfs --help`
#              works; otherwise reported as not run
# and prints hbiss/Java ratios. Results go to stdout as a table, and as JSON lines to
# $OUT_DIR/hdfs-compare.jsonl when OUT_DIR is set.
#
# The cluster is started here (4 DataNodes, replication 3, 128 MiB blocks so that per-block
# pipeline setup does not dominate) in a temporary directory and stopped at the end.
#
# Usage: bench/hdfs/compare.sh [--mib 1024] [--hbiss build/hbiss] [--base-port P]
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cluster="$repo_root/scripts/hdfs-cluster"
mib=1024
hbiss="$repo_root/build/hbiss"
port=$((24000 + RANDOM % 80 * 100))  # below the ephemeral range (32768+)
while [[ $# -gt 0 ]]; do
  case $1 in
    --mib) mib=$2; shift 2 ;;
    --hbiss) hbiss=$2; shift 2 ;;
    --base-port) port=$2; shift 2 ;;
    *) echo "usage: $0 [--mib N] [--hbiss PATH] [--base-port P]" >&2; exit 2 ;;
  esac
done

work=$(mktemp -d "${TMPDIR:-/tmp}/hbiss-hdfs-bench.XXXXXX")
cdir="$work/cluster"
trap '"$cluster" stop --dir "$cdir" > /dev/null 2>&1; rm -rf "$work"' EXIT

log() { echo "compare: $*" >&2; }
now_ns() { date +%s%N; }
mibps() { python3 -c "print(f'{$1 / 1048576 / ($2 / 1e9):.1f}')"; }
jsonl() { [[ -n "${OUT_DIR:-}" ]] && echo "$1" >> "$OUT_DIR/hdfs-compare.jsonl"; true; }

log "starting a private cluster on port $port"
uri=$("$cluster" start --dir "$cdir" --base-port "$port" --blocksize 134217728 | tail -n1)
[[ "$uri" == hdfs://* ]] || { log "cluster start failed"; exit 1; }
local_file="$work/data"
head -c $((mib * 1048576)) /dev/urandom > "$local_file"
bytes=$((mib * 1048576))
declare -A rate

# ---- Java, FileSystem API
log "java-api: $mib MiB write/read, hflush latency"
"$repo_root/bench/hdfs/run-java.sh" "$cdir" --mib "$mib" --path /bench/java-api \
  --ops write,read,hflush > "$work/java.jsonl" 2> "$work/java.err" || {
  cat "$work/java.err" >&2
  exit 1
}
while IFS= read -r line; do jsonl "$line"; done < "$work/java.jsonl"
rate[java-api-write]=$(python3 -c "import json,sys; [print(d['mib_per_s']) for d in map(json.loads, open(sys.argv[1])) if d['op']=='write']" "$work/java.jsonl")
rate[java-api-read]=$(python3 -c "import json,sys; [print(d['mib_per_s']) for d in map(json.loads, open(sys.argv[1])) if d['op']=='read']" "$work/java.jsonl")
hflush=$(python3 -c "import json,sys; [print(f\"p50 {d['p50_us']} us, p99 {d['p99_us']} us\") for d in map(json.loads, open(sys.argv[1])) if d['op']=='hflush']" "$work/java.jsonl")

# ---- Java, FsShell
log "fsshell: put and cat"
t0=$(now_ns)
"$cluster" dfs --dir "$cdir" -put "$local_file" "$uri/bench/fsshell" 2> "$work/fs.err"
rate[fsshell-write]=$(mibps "$bytes" $(($(now_ns) - t0)))
t0=$(now_ns)
"$cluster" dfs --dir "$cdir" -cat "$uri/bench/fsshell" > /dev/null 2>> "$work/fs.err"
rate[fsshell-read]=$(mibps "$bytes" $(($(now_ns) - t0)))
jsonl "{\"client\":\"fsshell\",\"op\":\"write\",\"bytes\":$bytes,\"mib_per_s\":${rate[fsshell-write]}}"
jsonl "{\"client\":\"fsshell\",\"op\":\"read\",\"bytes\":$bytes,\"mib_per_s\":${rate[fsshell-read]}}"

# ---- hbiss
hbiss_ran=0
if [[ -x "$hbiss" ]] && "$hbiss" dfs --help > /dev/null 2>&1; then
  log "hbiss: put and cat"
  t0=$(now_ns)
  "$hbiss" dfs put "$local_file" "$uri/bench/hbiss"
  rate[hbiss-write]=$(mibps "$bytes" $(($(now_ns) - t0)))
  t0=$(now_ns)
  "$hbiss" dfs cat "$uri/bench/hbiss" > "$work/hbiss.out"
  rate[hbiss-read]=$(mibps "$bytes" $(($(now_ns) - t0)))
  cmp -s "$local_file" "$work/hbiss.out" || { log "hbiss read back different bytes"; exit 1; }
  rm -f "$work/hbiss.out"
  jsonl "{\"client\":\"hbiss\",\"op\":\"write\",\"bytes\":$bytes,\"mib_per_s\":${rate[hbiss-write]}}"
  jsonl "{\"client\":\"hbiss\",\"op\":\"read\",\"bytes\":$bytes,\"mib_per_s\":${rate[hbiss-read]}}"
  hbiss_ran=1
fi

echo "HDFS sequential throughput, $mib MiB, replication 3, 128 MiB blocks (MiB/s)"
printf "  %-28s %10s %10s\n" client write read
printf "  %-28s %10s %10s\n" "java FileSystem API" "${rate[java-api-write]}" "${rate[java-api-read]}"
printf "  %-28s %10s %10s\n" "java hdfs dfs -put/-cat" "${rate[fsshell-write]}" "${rate[fsshell-read]}"
if [[ $hbiss_ran -eq 1 ]]; then
  printf "  %-28s %10s %10s\n" "hbiss dfs put/cat" "${rate[hbiss-write]}" "${rate[hbiss-read]}"
  ratio() { python3 -c "print(f'{$1 / $2:.2f}x')"; }
  echo "  hbiss / java API:     write $(ratio "${rate[hbiss-write]}" "${rate[java-api-write]}")," \
    "read $(ratio "${rate[hbiss-read]}" "${rate[java-api-read]}")"
  echo "  hbiss / hdfs dfs:     write $(ratio "${rate[hbiss-write]}" "${rate[fsshell-write]}")," \
    "read $(ratio "${rate[hbiss-read]}" "${rate[fsshell-read]}")"
else
  echo "  hbiss dfs                    NOT RUN ($hbiss has no working 'dfs' command)"
fi
echo "hflush round trip, 4 KiB appends, Java: $hflush"
