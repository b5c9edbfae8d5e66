#!/usr/bin/env bash
# kill -9 loop: a verifying writer (kill9_writer.py: 4 KiB writes over two
# connections, some FUA, a FLUSH every 8 on either connection) runs against
# hbiss serve, which is killed with SIGKILL at a random moment and restarted,
# ROUNDS times. Each round (and a final pass) first checks that every write
# acknowledged before the last completed FLUSH (on any connection: the
# CAN_MULTI_CONN promise) or with FUA reads back intact, and that no block
# holds bytes never written.
TEST_NAME=kill9
source "$(dirname "$0")/lib.sh"
need python3
python3 -c 'import nbd' 2>/dev/null || skip "python3-libnbd is not installed"
HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=${KILL9_ROUNDS:-25}

hbiss create vm -s 16M >/dev/null
MODEL=$WORK/model.json
RANDOM=$$
total_writes=0
for round in $(seq 1 "$ROUNDS"); do
  start_server
  python3 "$HERE/kill9_writer.py" "$(uri vm)" "$MODEL" "$round" >"$WORK/writer.log" 2>&1 &
  writer=$!
  # Kill at a random moment: 0.1 .. 1.6 s after start (during verification,
  # writes or flushes).
  sleep "0.$((RANDOM % 10))$((RANDOM % 10))"
  sleep "$((RANDOM % 2)).$((RANDOM % 10))"
  kill9_server
  rc=0
  wait "$writer" || rc=$?
  cat "$WORK/writer.log" | sed "s/^/[kill9 round $round] /"
  [ "$rc" -eq 0 ] || fail "round $round: writer exit $rc (data mismatch)"
  n=$(grep -o 'after [0-9]* writes' "$WORK/writer.log" | grep -o '[0-9]*' || echo 0)
  total_writes=$((total_writes + n))
  CHECKS=$((CHECKS + 1))
done
start_server
check "final verification" python3 "$HERE/kill9_writer.py" "$(uri vm)" "$MODEL" 0 verify-only
cat "$WORK/check.out"
grep -q "verified 1024 blocks" "$WORK/check.out" || fail "final verification did not complete"
log "$ROUNDS rounds, $total_writes writes acknowledged in total"
[ "$total_writes" -gt 0 ] || fail "no writes happened"
finish
