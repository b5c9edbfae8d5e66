#!/usr/bin/env bash
# The cleaner under a real client: fio overwrites a served volume four times
# over through the nbd engine. With the default background cleaner the log
# must come back to about twice the data while the server runs, and fio's
# crc32c verify pass must then read every block intact (the cleaner moved
# them), before and after a restart. A control server with
# --clean-threshold 0 keeps every segment (so the bound above can fail).
# The bounded part runs on the local store and, when HBISS_HDFS_URI names
# the test run's cluster, on HDFS too.
TEST_NAME=cleaner
source "$(dirname "$0")/lib.sh"
need fio
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio has no nbd engine"

SIZE_MB=${HBISS_CLEANER_TEST_MB:-64}  # the sanitizer pass sets 32
log_bytes() { hbiss info "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["log_bytes"])'; }

# Three passes of fresh random data, then a fourth that fio can verify.
overwrite() {
  local name=$1
  for seed in 1 2 3; do
    check "fio randwrite pass $seed on $name" \
      fio --name=p --ioengine=nbd --uri="$(uri "$name")" --rw=randwrite --bs=4k --iodepth=32 \
      --size=${SIZE_MB}M --randseed=$seed --refill_buffers
  done
  check "fio randwrite pass 4 on $name (verifiable)" verifiable "$name" --do_verify=0
}
# verifiable NAME MODE: the fourth pass's job; MODE --do_verify=0 writes it,
# --verify_only checks what it wrote.
verifiable() {
  fio --name=v --ioengine=nbd --uri="$(uri "$1")" --rw=randwrite --bs=4k --iodepth=32 \
    --size=${SIZE_MB}M --randseed=4242 --verify=crc32c --verify_fatal=1 "$2"
}

# bounded_run: the served volume "vm" of the current $STORE.
bounded_run() {
  hbiss create vm -s ${SIZE_MB}M --segment-size 1M >/dev/null
  start_server
  overwrite vm
  written=$((4 * SIZE_MB << 20))
  # Each closed segment left is at least half live: about twice the data.
  bound=$(((9 * SIZE_MB / 4 + 8) << 20))
  deadline=$((SECONDS + 90))
  while [ "$(log_bytes vm)" -gt "$bound" ] && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
  now=$(log_bytes vm)
  log "wrote $written bytes; log while serving: $now bytes (bound $bound)"
  [ "$now" -le "$bound" ] || fail "the background cleaner left $now bytes of log (bound $bound)"
  CHECKS=$((CHECKS + 1))
  check "fio verify of every block after cleaning" verifiable vm --verify_only
  stop_server
  after=$(log_bytes vm)
  [ "$after" -le "$bound" ] || fail "after a clean shutdown: $after bytes of log"
  CHECKS=$((CHECKS + 1))
  if grep -qiE "error|cleaner left" "$WORK/serve.log"; then fail "errors in the server log"; fi

  start_server
  check "fio verify after a restart" verifiable vm --verify_only
  stop_server
}

bounded_run
# The same on HDFS (the cluster of the test run), where a deleted segment's
# blocks really go away under a reader that still had them.
if [ -n "${HBISS_HDFS_URI:-}" ]; then
  LOCAL_STORE=$STORE
  STORE=$HBISS_HDFS_URI/hbiss-cleaner-test-$$
  EXTRA_CLEANUP="\"$HBISS\" dfs rm -r -f \"$STORE\" >/dev/null 2>&1"
  check "hdfs mkdir" "$HBISS" dfs mkdir "$STORE"
  log "on HDFS: $STORE"
  bounded_run
  "$HBISS" dfs rm -r -f "$STORE" >/dev/null
  STORE=$LOCAL_STORE
elif [ "${HBISS_REQUIRE_HDFS:-0}" = 1 ]; then
  fail "HBISS_REQUIRE_HDFS=1 but HBISS_HDFS_URI is not set"
fi

hbiss create keep -s ${SIZE_MB}M --segment-size 1M >/dev/null
# Control: the same writes with the cleaner off keep all the log.
start_server --clean-threshold 0
overwrite keep
stop_server
kept=$(log_bytes keep)
log "cleaner off: $kept bytes of log"
[ "$kept" -ge "$written" ] || fail "with --clean-threshold 0 the log shrank to $kept bytes"
CHECKS=$((CHECKS + 1))
# `hbiss clean` then reclaims it offline, and the data stays.
check "hbiss clean keep" hbiss clean keep
cleaned=$(log_bytes keep)
log "after hbiss clean: $cleaned bytes of log"
[ "$cleaned" -le "$bound" ] || fail "hbiss clean left $cleaned bytes of log"
CHECKS=$((CHECKS + 1))
start_server
check "fio verify after hbiss clean" verifiable keep --verify_only
finish
