#!/usr/bin/env bash
# fio's nbd engine: random 4 KiB writes verified with crc32c at depth 32, two
# jobs (two NBD connections to one export), then a separate verify pass after
# a server restart.
TEST_NAME=fio
source "$(dirname "$0")/lib.sh"
need fio
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio has no nbd engine"

hbiss create vm -s 128M >/dev/null
start_server
common() { COMMON=(--ioengine=nbd --uri="$(uri vm)" --rw=randwrite --bs=4k --iodepth=32
        --numjobs=2 --size=32M --offset_increment=64M --verify=crc32c --verify_fatal=1
        --randseed=4242 --group_reporting); }
common
check "fio randwrite + verify, 2 connections, QD32" \
  fio --name=w "${COMMON[@]}" --do_verify=1 --output-format=json
python3 - "$WORK/check.out" <<'PY' || fail "fio results"
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])
job = j["jobs"][0]
assert job["error"] == 0, job["error"]
assert job["write"]["io_bytes"] == 2 * (32 << 20), job["write"]["io_bytes"]
assert job["read"]["io_bytes"] == 2 * (32 << 20), job["read"]["io_bytes"]  # the verify pass
PY
CHECKS=$((CHECKS + 1))
# Both connections were served at once.
[ "$(grep -c "export 'vm'" "$WORK/serve.log")" -ge 2 ] || fail "fio did not open 2 connections"
# ... and at least two of them shared one open volume (multi-conn).
awk "/opened volume 'vm'/ {n = 0} /export 'vm'/ {n++; if (n >= 2) ok = 1} END {exit !ok}" \
  "$WORK/serve.log" || fail "no two connections shared one open volume"
CHECKS=$((CHECKS + 2))
# The verify pass can fail: on a never-written volume it must.
hbiss create empty -s 128M >/dev/null
check_fails "fio verify-only on a never-written volume" \
  fio --name=w --ioengine=nbd --uri="$(uri empty)" --rw=randwrite --bs=4k --iodepth=32 \
  --numjobs=2 --size=32M --offset_increment=64M --verify=crc32c --verify_fatal=1 \
  --randseed=4242 --verify_only
stop_server
start_server
common
check "fio verify-only pass after restart" \
  fio --name=w "${COMMON[@]}" --verify_only --output=/dev/stdout
finish
