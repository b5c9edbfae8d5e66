#!/usr/bin/env bash
# `hbiss export` of a volume that `hbiss serve` has open on the real HDFS cluster, ten times,
# while fio (its nbd engine) writes it with verify=md5 through the server (issue 9).
# - fio fills [0, 28M) first, then rounds of random 4 KiB writes with a FLUSH every 32
#   writes and a verify pass at the end of each round; every round must end with no error,
#   no verify failure, and all its bytes written and read back.
# - Before each export the test writes and flushes markers through a second connection (a
#   round counter it overwrites, and one block per round). Each export must succeed, be the
#   volume's size, hold in [0, 28M) only whole fio blocks for their offsets (old or new data,
#   never torn, zero or misplaced: export_fio_check.py), and every marker flushed before it
#   began (the counter's latest value, not an older one), and no later marker.
# - At the end, quiet, an export equals what the server reads (nbdcopy), byte for byte, and
#   the server logged no failed segment.
# Prints each export's time. Env: EXPORTS (10), FIO_RATE (IOPS cap of the writer, 400).
# Needs HBISS_HDFS_URI; skipped without it unless HBISS_REQUIRE_HDFS=1.
TEST_NAME=hdfs_export_fio
source "$(dirname "$0")/lib.sh"
need fio qemu-io nbdcopy
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio has no nbd engine"
if [ -z "${HBISS_HDFS_URI:-}" ]; then
  [ "${HBISS_REQUIRE_HDFS:-0}" = 1 ] && fail "HBISS_REQUIRE_HDFS=1 but HBISS_HDFS_URI is not set"
  skip "HBISS_HDFS_URI is not set (no live HDFS cluster)"
fi
HERE=$(cd "$(dirname "$0")" && pwd)
EXPORTS=${EXPORTS:-10}
FIO_RATE=${FIO_RATE:-400}
SIZE=$((32 << 20))
FIO_BYTES=$((28 << 20))
MARK_BASE=$((30 << 20))
HDFS_DIR="/hbiss-export-fio-$(date +%s)-$$"
STORE="${HBISS_HDFS_URI%/}$HDFS_DIR"
EXTRA_CLEANUP='[ -n "${FIO_PID:-}" ] && kill -KILL "$FIO_PID"; "$HBISS" dfs rm -r -f "$STORE" >/dev/null 2>&1'
FIO_PID=""
"$HBISS" dfs mkdir "$STORE" >/dev/null || fail "cannot create $STORE"
T0=$(date +%s.%N)
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(date +%s.%N)"; }

check "create a 32 MiB volume in HDFS" hbiss create vm -s $SIZE
start_server

# fio's results: no error, SIZE bytes written and (the verify pass) read back.
fio_ok() {  # fio_ok JSON WHAT
  python3 - "$1" "$FIO_BYTES" <<'PY' || fail "$2: fio's results"
import json, sys
text = open(sys.argv[1]).read()
job = json.loads(text[text.index("{"):])["jobs"][0]
want = int(sys.argv[2])
assert job["error"] == 0, f"fio error {job['error']}"
assert job["write"]["io_bytes"] == want, f"wrote {job['write']['io_bytes']}, wanted {want}"
assert job["read"]["io_bytes"] == want, f"verified {job['read']['io_bytes']}, wanted {want}"
print(f"wrote {want >> 20} MiB at {job['write']['iops']:.0f} IOPS "
      f"(p99 {job['write']['clat_ns']['percentile'].get('99.000000', 0) / 1e6:.1f} ms), verified")
PY
  CHECKS=$((CHECKS + 1))
}

check "fio fills [0, 28M) with md5 verify blocks" \
  fio --name=fill --ioengine=nbd --uri="$(uri vm)" --rw=write --bs=64k --iodepth=8 \
  --size=$FIO_BYTES --verify=md5 --verify_interval=4096 --do_verify=1 --verify_fatal=1 \
  --end_fsync=1 --output-format=json
cp "$WORK/check.out" "$WORK/fill.json"
fio_ok "$WORK/fill.json" "fill" >"$WORK/fio_ok.out"
log "fill: $(cat "$WORK/fio_ok.out")"

round=0
fio_round=0
export_secs=()
while [ "$round" -lt "$EXPORTS" ]; do
  fio_round=$((fio_round + 1))
  fio --name=w --ioengine=nbd --uri="$(uri vm)" --rw=randwrite --bs=4k --iodepth=16 \
    --size=$FIO_BYTES --rate_iops="$FIO_RATE" --fsync=32 --verify=md5 --do_verify=1 \
    --verify_fatal=1 --randseed=$((4200 + fio_round)) --output-format=json \
    >"$WORK/fio$fio_round.json" 2>"$WORK/fio$fio_round.err" &
  FIO_PID=$!
  during=0
  while [ "$round" -lt "$EXPORTS" ] && kill -0 "$FIO_PID" 2>/dev/null; do
    check "markers of round $round, flushed" qemu-io -f raw \
      -c "write -P $((round + 1)) $MARK_BASE 4k" \
      -c "write -P $((round + 1)) $((MARK_BASE + (round + 1) * 4096)) 4k" -c flush "$(uri vm)"
    t=$(date +%s.%N)
    if ! "$HBISS" --store "$STORE" export vm "$WORK/export.img" 2>"$WORK/export.err"; then
      cat "$WORK/export.err" >&2
      fail "export $round (while fio round $fio_round wrote) failed"
    fi
    secs=$(elapsed "$t")
    export_secs+=("$secs")
    check "export $round: size, whole fio blocks, markers" \
      python3 "$HERE/export_fio_check.py" "$WORK/export.img" $SIZE $FIO_BYTES $MARK_BASE "$round"
    log "export $round: ${secs} s during fio round $fio_round; $(cat "$WORK/check.out")"
    round=$((round + 1))
    during=$((during + 1))
  done
  rc=0
  wait "$FIO_PID" || rc=$?
  FIO_PID=""
  if [ "$rc" -ne 0 ]; then
    cat "$WORK/fio$fio_round.err" "$WORK/fio$fio_round.json" >&2
    fail "fio round $fio_round exited with status $rc"
  fi
  fio_ok "$WORK/fio$fio_round.json" "fio round $fio_round" >"$WORK/fio_ok.out"
  log "fio round $fio_round ($during exports during it): $(cat "$WORK/fio_ok.out")"
done

# Quiet now: an export is exactly what the server serves.
check "a final export" "$HBISS" --store "$STORE" export vm "$WORK/final.img"
check "nbdcopy of the volume through the server" nbdcopy "$(uri vm)" "$WORK/served.img"
check "the final export equals what the server reads" cmp "$WORK/final.img" "$WORK/served.img"
check "the final image: whole fio blocks, markers" \
  python3 "$HERE/export_fio_check.py" "$WORK/final.img" $SIZE $FIO_BYTES $MARK_BASE $((EXPORTS - 1))
if grep -q "COMPLETE but not UNDER_CONSTRUCTION\|volume .* failed" "$WORK/serve.log"; then
  fail "the server logged a failed segment"
fi
log "$EXPORTS exports during $fio_round fio rounds; export times (s): ${export_secs[*]}"
log "runtime $(elapsed "$T0") s"
finish
