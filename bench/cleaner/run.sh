#!/usr/bin/env bash
# Cleaner benchmark: what the background cleaner costs and what it saves.
# fio (--ioengine=nbd, one TCP connection on 127.0.0.1) overwrites an export
# PASSES times with 4 KiB random writes at QD32 (each pass writes every block
# once, in random order), against:
#   hbiss serve --clean-threshold 0    (no cleaner: the log keeps everything)
#   hbiss serve                        (the default cleaner, threshold 0.5)
#   qemu-nbd on a preallocated raw file in the same filesystem (the peer)
# and prints each pass's IOPS, the ratio to qemu-nbd raw in the same run, and
# the hbiss log size against the data size after the passes and after a clean
# shutdown (space amplification).
#
# Usage: bench/cleaner/run.sh [HBISS_BINARY]
# Env:   SIZE (export size, default 1G), PASSES (default 4), DIR (where the
#        store and image live, default a temp dir under /var/tmp), OUT
#        (default bench/cleaner/results).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
HBISS=$(readlink -f "${1:-$ROOT/build/hbiss}")
SIZE=${SIZE:-1G}
PASSES=${PASSES:-4}
OUT=${OUT:-$HERE/results}
for t in fio qemu-nbd qemu-img nbdinfo python3; do
  command -v $t >/dev/null || { echo "bench: $t is not installed" >&2; exit 1; }
done
[ -x "$HBISS" ] || { echo "bench: no hbiss binary at $HBISS" >&2; exit 1; }
DIR=${DIR:-$(mktemp -d /var/tmp/hbiss-cleaner-bench.XXXXXX)}
mkdir -p "$DIR" "$OUT"
source "$ROOT/bench/lib.sh"
stop() {
  kill -TERM "$PID"
  wait "$PID" || { echo "bench: server exited with an error" >&2; exit 1; }
  PID=""
}
log_bytes() {
  "$HBISS" --store "$DIR/store-$1" info vm --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["log_bytes"])'
}
# passes URI: prints one IOPS figure per pass
passes() {
  for p in $(seq 1 "$PASSES"); do
    fio --name=p --ioengine=nbd --uri="$1" --rw=randwrite --bs=4k --iodepth=32 --size="$SIZE" \
      --randseed="$p" --refill_buffers --output-format=json |
      python3 -c 'import json,sys; t=sys.stdin.read(); print(round(json.loads(t[t.index("{"):])["jobs"][0]["write"]["iops"]))'
  done
}

declare -A IOPS LOG_AFTER LOG_IDLE SETTLE LOG_CLOSED
for cfg in off on; do
  mkdir -p "$DIR/store-$cfg"
  "$HBISS" --store "$DIR/store-$cfg" create vm -s "$SIZE" >/dev/null
  port=$(free_port)
  args=()
  [ "$cfg" = off ] && args=(--clean-threshold 0)
  "$HBISS" --store "$DIR/store-$cfg" serve --listen "127.0.0.1:$port" "${args[@]}" \
    2>"$DIR/serve-$cfg.log" &
  PID=$!
  wait_port "$port" vm
  IOPS[$cfg]=$(passes "nbd://127.0.0.1:$port/vm" | xargs)
  LOG_AFTER[$cfg]=$(log_bytes "$cfg")
  # Let the cleaner finish with an idle volume: until the log stops
  # shrinking for 10 s (at most 5 minutes).
  last=${LOG_AFTER[$cfg]}; still=0; t0=$SECONDS
  while [ $still -lt 10 ] && [ $((SECONDS - t0)) -lt 300 ]; do
    sleep 1
    now=$(log_bytes "$cfg")
    if [ "$now" -lt "$last" ]; then still=0; last=$now; else still=$((still + 1)); fi
  done
  LOG_IDLE[$cfg]=$last
  SETTLE[$cfg]=$((SECONDS - t0 - still))
  stop
  LOG_CLOSED[$cfg]=$(log_bytes "$cfg")
done
qemu-img create -q -f raw -o preallocation=full "$DIR/raw.img" "$SIZE"
port=$(free_port)
qemu-nbd --cache=writeback --aio=threads --discard=unmap -e 4 -t -f raw -x vm -b 127.0.0.1 \
  -p "$port" "$DIR/raw.img" &
PID=$!
wait_port "$port" vm
IOPS[raw]=$(passes "nbd://127.0.0.1:$port/vm" | xargs)
stop

python3 - "$OUT" "$SIZE" "$PASSES" "$HBISS" "${IOPS[off]}" "${IOPS[on]}" "${IOPS[raw]}" \
  "${LOG_AFTER[off]}" "${LOG_CLOSED[off]}" "${LOG_AFTER[on]}" "${LOG_CLOSED[on]}" \
  "${LOG_IDLE[off]}" "${LOG_IDLE[on]}" "${SETTLE[on]}" <<'PY'
import sys, datetime, os
out, size, passes, hbiss = sys.argv[1:5]
off, on, raw = [list(map(int, a.split())) for a in sys.argv[5:8]]
la_off, lc_off, la_on, lc_on, li_off, li_on, settle = map(int, sys.argv[8:15])
units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
data = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
lines = []
lines.append("## Parameters\n")
lines.append(f"- date: {datetime.datetime.utcnow().strftime('%Y-%m-%dT%H:%M:%SZ')}")
lines.append(f"- host: {os.cpu_count()} CPUs")
lines.append(f"- hbiss: {hbiss}")
lines.append(f"- export size {size}; {passes} passes of fio --ioengine=nbd --rw=randwrite --bs=4k "
             "--iodepth=32 --size=SIZE --randseed=PASS --refill_buffers (each pass writes every "
             "block once), one connection")
lines.append("- qemu-nbd: --cache=writeback --aio=threads -e 4, raw file preallocation=full")
lines.append(f"- command: SIZE={size} PASSES={passes} bench/cleaner/run.sh {hbiss}\n")
lines.append("## IOPS per pass\n")
lines.append("| pass | hbiss, cleaner off | hbiss, cleaner on | qemu-nbd raw | off / raw | on / raw |")
lines.append("|---|---|---|---|---|---|")
for i in range(len(raw)):
    lines.append(f"| {i + 1} | {off[i]} | {on[i]} | {raw[i]} | {off[i] / raw[i]:.2f}x | "
                 f"{on[i] / raw[i]:.2f}x |")
lines.append("\n## Log size (space amplification: log bytes / volume size)\n")
lines.append("| | right after the passes | idle until it stops shrinking | after a clean shutdown |")
lines.append("|---|---|---|---|")
def mib(b):
    return f"{b / 2**20:.0f} MiB ({b / data:.2f}x)"
lines.append(f"| cleaner off | {mib(la_off)} | {mib(li_off)} | {mib(lc_off)} |")
lines.append(f"| cleaner on | {mib(la_on)} | {mib(li_on)} (after {settle} s) | {mib(lc_on)} |")
text = "\n".join(lines) + "\n"
print(text)
open(os.path.join(out, "results.md"), "w").write(text)
PY
