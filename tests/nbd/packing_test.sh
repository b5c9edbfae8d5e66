#!/usr/bin/env bash
# The client patterns that crashed `hbiss serve` (issue 8, C1: a batch header
# outgrew its 4 KiB slot), sent by a real libnbd client with no flush: about
# 230 scattered 4 KiB writes (or 300 scattered 4 KiB trims), then a 4 KiB
# write at block X and a write of 104 KiB or more at block X+1. The server
# must stay up, every read must match what was written, before and after a
# flush, and after a restart. The checks are in packing_checks.py.
TEST_NAME=packing
source "$(dirname "$0")/lib.sh"
need nbdsh
HERE=$(cd "$(dirname "$0")" && pwd)

hbiss create vm -s 256M >/dev/null
start_server
check "patterns without flush (write)" env URI="$(uri vm)" PHASE=write STATE="$WORK/packing.state" \
  nbdsh -c "exec(open('$HERE/packing_checks.py').read())"
cat "$WORK/check.out"
kill -0 "$SERVER_PID" || fail "hbiss serve died"
stop_server
start_server
check "the same data after a restart" env URI="$(uri vm)" PHASE=verify STATE="$WORK/packing.state" \
  nbdsh -c "exec(open('$HERE/packing_checks.py').read())"
cat "$WORK/check.out"
finish
