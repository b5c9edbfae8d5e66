#!/usr/bin/env bash
# Runs the NBD libFuzzer target for a bounded time with a seed corpus of valid
# client streams. Usage: fuzz.sh [NBD_FUZZ_BINARY] [SECONDS]
# Without a binary it builds one: clang, -DHBISS_FUZZ=ON, in build-fuzz/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
FUZZ=${1:-}
SECS=${2:-60}
if [ -z "$FUZZ" ]; then
  command -v clang++ >/dev/null || { echo "SKIP: clang++ is not installed"; exit 77; }
  cmake -S "$ROOT" -B "$ROOT/build-fuzz" -G Ninja -DCMAKE_C_COMPILER=clang \
    -DCMAKE_CXX_COMPILER=clang++ -DHBISS_FUZZ=ON >/dev/null
  ninja -C "$ROOT/build-fuzz" nbd_fuzz >/dev/null
  FUZZ=$ROOT/build-fuzz/nbd/nbd_fuzz
fi
WORK=$(mktemp -d /tmp/hbiss-nbd-fuzz.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/corpus"
# Seeds: a mode byte, then a client stream (see nbd/nbd_fuzz.cc).
/usr/bin/python3 - "$WORK/corpus" <<'PY'
import struct, sys, os
d = sys.argv[1]
IHAVEOPT = 0x49484156454F5054
def opt(o, data=b""): return struct.pack(">QII", IHAVEOPT, o, len(data)) + data
def req(t, flags, cookie, off, ln): return struct.pack(">IHHQQI", 0x25609513, flags, t, cookie, off, ln)
def info(name, infos=()): return struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos)) + b"".join(struct.pack(">H", i) for i in infos)
def meta(name, qs): return struct.pack(">I", len(name)) + name + struct.pack(">I", len(qs)) + b"".join(struct.pack(">I", len(q)) + q for q in qs)
hello = struct.pack(">I", 3)
seeds = {
  "list": b"\0" + hello + opt(3) + opt(2),
  "info": b"\0" + hello + opt(8) + opt(9, meta(b"vm", [])) + opt(6, info(b"vm", [3, 1, 2])) + opt(5) + opt(7, info(b"ro")) + req(0, 0, 1, 0, 512),
  "exportname": b"\0" + struct.pack(">I", 1) + opt(1, b"vm") + req(1, 1, 1, 0, 4) + b"abcd" + req(2, 0, 2, 0, 0),
  "io": b"\1" + req(1, 1, 1, 4096, 8) + b"12345678" + req(0, 4, 2, 4096, 8) + req(7, 0, 3, 0, 1 << 20) + req(7, 8, 4, 0, 100) + req(4, 0, 5, 0, 4096) + req(6, 2 | 16, 6, 8192, 4096) + req(3, 0, 7, 0, 0) + req(5, 0, 8, 0, 4096) + req(2, 0, 9, 0, 0),
  "bad": b"\1" + req(0, 0, 1, 1 << 20, 1) + req(1, 0, 2, 0, 0) + req(9, 0, 3, 0, 1) + req(0, 512, 4, 0, 1),
}
for k, v in seeds.items():
    open(os.path.join(d, k), "wb").write(v)
PY
echo "fuzzing $FUZZ for $SECS s"
"$FUZZ" -max_total_time="$SECS" -max_len=4096 -rss_limit_mb=1024 -timeout=10 \
  -print_final_stats=1 "$WORK/corpus" 2>&1 | tail -n 25
