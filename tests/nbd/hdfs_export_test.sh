#!/usr/bin/env bash
# `hbiss export` of a volume that `hbiss serve` has open and a client is writing, on the
# real HDFS cluster (issue #9). The export is a read-only open from another process: it
# must read up to what the server has flushed and never take the server's open segment
# away (it used to recover its lease, and the server's next write failed with
# "updateBlockForPipeline: ... is COMPLETE but not UNDER_CONSTRUCTION").
# export_while_writing.py writes and flushes, runs three exports while it keeps writing, and
# checks that no write or flush fails and that each image holds what was flushed before it.
# Then the server stops cleanly. Needs HBISS_HDFS_URI; skipped without it unless
# HBISS_REQUIRE_HDFS=1.
TEST_NAME=hdfs_export
source "$(dirname "$0")/lib.sh"
if [ -z "${HBISS_HDFS_URI:-}" ]; then
  [ "${HBISS_REQUIRE_HDFS:-0}" = 1 ] && fail "HBISS_REQUIRE_HDFS=1 but HBISS_HDFS_URI is not set"
  skip "HBISS_HDFS_URI is not set (no live HDFS cluster)"
fi
python3 -c "import nbd" 2>/dev/null || skip "python3 libnbd bindings (python3-libnbd) missing"
HDFS_DIR="/hbiss-export-$(date +%s)-$$"
STORE="${HBISS_HDFS_URI%/}$HDFS_DIR"
EXTRA_CLEANUP='"$HBISS" dfs rm -r -f "$STORE" >/dev/null 2>&1'
"$HBISS" dfs mkdir "$STORE" >/dev/null || fail "cannot create $STORE"

check "create a 16 MiB volume in HDFS" hbiss create vm -s 16M
start_server
if ! python3 "$(dirname "$0")/export_while_writing.py" "$(uri vm)" "$HBISS" "$STORE" vm \
     "$WORK" >"$WORK/client.out" 2>&1; then
  cat "$WORK/client.out" >&2
  fail "the writer or an export failed"
fi
cat "$WORK/client.out"
CHECKS=$((CHECKS + 1))
if grep -q "COMPLETE but not UNDER_CONSTRUCTION\|volume .* failed" "$WORK/serve.log"; then
  fail "the server logged a failed segment"
fi
finish
