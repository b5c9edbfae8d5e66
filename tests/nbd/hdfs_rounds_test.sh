#!/usr/bin/env bash
# Many takeovers on the real HDFS cluster (issue 9): ROUNDS (20) rounds of
#   server X (hbiss-A and hbiss-B in turn, as two hosts) starts on the volume;
#   the verifying writer (hdfs_rounds_writer.py) checks the volume against its model, then
#   writes batches of random blocks (many in flight, a FLUSH after each batch, never one per
#   write) until X is killed with SIGKILL mid-stream, at a random moment;
#   `hbiss lock break` takes the volume from the dead X (explicitly: no waiting for the
#   lease), and the next round's server starts.
# Each round's verification checks that every write acknowledged before the last completed
# FLUSH of the rounds before reads back: a block holds its flushed write or one written after
# it (in flight or acknowledged when X died), never anything else. The test prints how many
# flushed writes were lost over all rounds (it must be 0) and fails on any.
# A final server (not killed) verifies once more and stops cleanly.
# Needs HBISS_HDFS_URI; skipped without it unless HBISS_REQUIRE_HDFS=1; skipped (77) when
# this hbiss has no `lock break` yet.
TEST_NAME=hdfs_rounds
source "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -z "${HBISS_HDFS_URI:-}" ]; then
  [ "${HBISS_REQUIRE_HDFS:-0}" = 1 ] && fail "HBISS_REQUIRE_HDFS=1 but HBISS_HDFS_URI is not set"
  skip "HBISS_HDFS_URI is not set (no live HDFS cluster)"
fi
python3 -c "import nbd" 2>/dev/null || skip "python3 libnbd bindings (python3-libnbd) missing"
need_ownership
ROUNDS=${HBISS_ROUNDS:-20}
VOLUME_MIB=${HBISS_ROUNDS_VOLUME_MIB:-16}
started=$(date +%s)
HDFS_DIR="/hbiss-rounds-$(date +%s)-$$"
STORE="${HBISS_HDFS_URI%/}$HDFS_DIR"
[ "${HBISS_KEEP_WORK:-0}" = 1 ] || EXTRA_CLEANUP='"$HBISS" dfs rm -r -f "$STORE" >/dev/null 2>&1'
"$HBISS" dfs mkdir "$STORE" >/dev/null || fail "cannot create $STORE"
check "create a ${VOLUME_MIB} MiB volume in HDFS" hbiss create vm -s "${VOLUME_MIB}M"
MODEL=$WORK/model.json
RANDOM=$$
log "ROUNDS=$ROUNDS VOLUME_MIB=$VOLUME_MIB seed $$ store $STORE"

verified_line() { { grep -a '^VERIFIED' "$1" || true; } | tail -n 1; }
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
lost_total=0
durable_checked=0
break_ms=()
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then X=A; else X=B; fi
  start_node "$X"
  WLOG=$WORK/writer-$round.log  # one per round: the wait below must not see the last one's
  python3 "$HERE/hdfs_rounds_writer.py" "$(node_uri "$X" vm)" "$MODEL" "$round" \
    >"$WLOG" 2>&1 &
  writer=$!
  # Kill mid-stream: 0.3 .. 2.2 s after the writer's first FLUSH on this server (so that X
  # owns the volume when it dies).
  deadline=$(($(date +%s) + 60))
  until grep -q "^FLUSHED" "$WLOG" 2>/dev/null; do
    kill -0 "$writer" 2>/dev/null || break
    [ "$(date +%s)" -lt "$deadline" ] || fail "round $round: no FLUSH completed within 60 s"
    sleep 0.05
  done
  sleep "$((RANDOM % 2)).$((RANDOM % 10))"
  sleep "0.$((3 + RANDOM % 3))"
  kill9_node "$X"
  rc=0
  wait "$writer" || rc=$?
  sed "s/^/[round $round on $X] /" "$WLOG"
  v=$(verified_line "$WLOG")
  [ -n "$v" ] || fail "round $round: no verification (writer exit $rc)"
  lost_total=$((lost_total + $(field "$v" lost)))
  durable_checked=$((durable_checked + $(field "$v" durable)))
  [ "$rc" -eq 0 ] || fail "round $round: writer exit $rc ($lost_total flushed writes lost so far)"
  grep -q 'went away after' "$WLOG" || fail "round $round: the writer did not see the kill"
  CHECKS=$((CHECKS + 1))
  t0=$(date +%s%N)
  check "round $round: hbiss lock break vm (hbiss-$X is dead)" hbiss lock break vm
  break_ms+=($((($(date +%s%N) - t0) / 1000000)))
done

start_node C
check "final verification" python3 "$HERE/hdfs_rounds_writer.py" "$(node_uri C vm)" "$MODEL" 0 \
  verify-only
v=$(verified_line "$WORK/check.out")
echo "$v"
lost_total=$((lost_total + $(field "$v" lost)))
durable_checked=$((durable_checked + $(field "$v" durable)))
stop_node C
stats=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["stats"]; print(s["acked"], s["flushes"])' "$MODEL")
log "$ROUNDS rounds: $(echo "$stats" | cut -d' ' -f1) writes acknowledged and" \
    "$(echo "$stats" | cut -d' ' -f2) flushes in all; $durable_checked flushed blocks checked" \
    "after takeovers; $lost_total flushed writes lost"
log "lock break took (ms): ${break_ms[*]}"
[ "$lost_total" -eq 0 ] || fail "$lost_total flushed writes lost"
[ "$(echo "$stats" | cut -d' ' -f2)" -gt "$ROUNDS" ] || fail "too few flushes: $stats"
log "total $(($(date +%s) - started)) s"
finish
