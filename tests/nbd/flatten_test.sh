#!/usr/bin/env bash
# `hbiss flatten` of a clone while `hbiss serve` serves it (doc/snapshots.md "Served
# volumes"), with real clients:
#  - a clone of a 96 MiB random image is served, and a writer (python libnbd, one write
#    at a time, each acknowledged write logged) writes random blocks of it all along;
#  - `hbiss flatten c` goes through the server ("by server"), draws its progress bar on a
#    terminal (script(1)), and the writer's writes go on meanwhile;
#  - afterwards the parent's snapshot can be removed (the clone no longer needs it), and
#    every byte of the clone, read through the export and again after a server restart,
#    equals the image with the logged writes applied;
#  - flatten run again copies nothing (idempotent);
#  - a server killed -9 mid-flatten: the command fails saying the server stopped
#    answering and that running it again is safe; after `hbiss lock break`, flatten run
#    again by the command itself (nobody serves the clone) finishes it, the parent
#    snapshot can go, and the clone holds the image plus its client's write.
TEST_NAME=flatten
source "$(dirname "$0")/lib.sh"
need nbdcopy python3 cmp script
python3 -c "import nbd" 2>/dev/null || skip "python3 libnbd bindings (python3-libnbd) missing"
HERE=$(dirname "$0")
MiB=$((1 << 20))
BLOCKS=$((96 * MiB / 4096))
WRITER_PID=""
HOLDER_PID=""
FLATTEN_PID=""
EXTRA_CLEANUP='for p in $WRITER_PID $HOLDER_PID $FLATTEN_PID; do kill -KILL $p; done 2>/dev/null'

acked() { if [ -f "$WORK/writer.log" ]; then wc -l <"$WORK/writer.log"; else echo 0; fi; }

head -c $((96 * MiB)) /dev/urandom >"$WORK/gold.raw"
check "import gold" hbiss import gold "$WORK/gold.raw"
check "snap create gold@base" hbiss snap create gold@base
check "clone gold@base c" hbiss clone gold@base c
check "snap create gold@other" hbiss snap create gold@other
check "clone gold@other idle" hbiss clone gold@other idle
start_server
U=$(uri c)

python3 "$HERE/flatten_writer.py" "$U" $BLOCKS "$WORK/stop" >"$WORK/writer.log" \
  2>"$WORK/writer.err" &
WRITER_PID=$!
for _ in $(seq 1 200); do [ "$(acked)" -ge 100 ] && break; sleep 0.05; done
[ "$(acked)" -ge 100 ] || fail "the writer did not get going: $(cat "$WORK/writer.err")"
BEFORE=$(acked)
# On a terminal, so that the progress bar is drawn.
check "flatten c while served and written" \
  script -qec "$HBISS --store $STORE flatten c" "$WORK/flatten.tty"
AFTER=$(acked)
log "$(tr '\r' '\n' <"$WORK/check.out" | grep -a . | tail -n 2 | tr -d '\033' | tr '\n' ' ')"
grep -q "by server" "$WORK/check.out" || fail "flatten did not go through the server: \
$(cat "$WORK/check.out")"
grep -q "flatten c .*%.*\[#" "$WORK/check.out" || fail "no progress bar: $(cat "$WORK/check.out")"
grep -q "flatten job .* done" "$WORK/serve.log" || fail "the server logged no flatten job"
[ "$AFTER" -gt "$BEFORE" ] || fail "no write was acknowledged while flatten ran"
log "writes acknowledged while flatten ran: $((AFTER - BEFORE))"
sleep 0.3
touch "$WORK/stop"
wait "$WRITER_PID" || fail "the writer failed: $(cat "$WORK/writer.err")"
WRITER_PID=""

check "snap rm gold@base (c no longer needs it)" hbiss snap rm gold@base
cp "$WORK/gold.raw" "$WORK/want.raw"
python3 "$HERE/flatten_writer.py" apply "$WORK/want.raw" "$WORK/writer.log"
check "copy c through the export" nbdcopy "$U" "$WORK/c.raw"
check "c equals the image with the writer's writes" cmp "$WORK/want.raw" "$WORK/c.raw"
check "flatten c again" hbiss flatten c --no-progress
grep -q " 0 blocks copied" "$WORK/check.out" || fail "a second flatten copied: \
$(cat "$WORK/check.out")"
stop_server
start_server
check "copy c after a restart" nbdcopy "$(uri c)" "$WORK/c2.raw"
check "c still equals it" cmp "$WORK/want.raw" "$WORK/c2.raw"

# --- the server dies mid-flatten: the command says so; run again, it finishes -------------
python3 - "$(uri idle)" "$WORK/held" <<'PY' &
import nbd, sys, time
h = nbd.NBD(); h.connect_uri(sys.argv[1]); h.pwrite(b"\x5a" * 4096, 0); h.flush()
open(sys.argv[2], "w").close()
time.sleep(600)
PY
HOLDER_PID=$!
for _ in $(seq 1 100); do [ -f "$WORK/held" ] && break; sleep 0.05; done
[ -f "$WORK/held" ] || fail "the client of idle did not write"
script -qfec "$HBISS --store $STORE flatten idle" "$WORK/idle.tty" >"$WORK/idle.out" 2>&1 &
FLATTEN_PID=$!
# Killed as soon as it has begun (a 96 MiB flatten takes a few hundred ms at least).
for _ in $(seq 1 1000); do grep -q "flatten job .* begins" "$WORK/serve.log" && break; sleep 0.01; done
kill9_server
grep -q "volume idle: flatten job .* done" "$WORK/serve.log" &&
  fail "the flatten of idle ended before its server could be killed"
kill -KILL "$HOLDER_PID"
wait "$HOLDER_PID" 2>/dev/null || true
HOLDER_PID=""
RC=0
wait "$FLATTEN_PID" || RC=$?
FLATTEN_PID=""
[ "$RC" -ne 0 ] || fail "flatten idle succeeded though its server was killed: \
$(cat "$WORK/idle.out")"
grep -q "stopped answering" "$WORK/idle.out" && grep -q "again is safe" "$WORK/idle.out" ||
  fail "the failure does not say the server stopped answering: $(cat "$WORK/idle.out")"
CHECKS=$((CHECKS + 1))
log "$(tr '\r' '\n' <"$WORK/idle.out" | grep -a "hbiss:")"
check "lock break idle" hbiss lock break idle
check "flatten idle again (nobody serves it)" hbiss flatten idle --no-progress
grep -q "by server" "$WORK/check.out" && fail "nobody serves idle, yet a server did it"
check "snap rm gold@other (idle no longer needs it)" hbiss snap rm gold@other
cp "$WORK/gold.raw" "$WORK/idle-want.raw"
python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.write(b"\x5a" * 4096)' "$WORK/idle-want.raw"
check "export idle" hbiss export idle "$WORK/idle.raw"
check "idle equals the image with its client's write" cmp "$WORK/idle-want.raw" "$WORK/idle.raw"
finish
