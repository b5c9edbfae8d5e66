#!/usr/bin/env bash
# Snapshots of a served volume (doc/snapshots.md "Served volumes"), with real clients:
#  - `hbiss snap create vol@s1` while `hbiss serve` owns the volume and a writer (nbdsh,
#    one write at a time, each acknowledged write logged) is active: the command goes
#    through the server, and vol@s1 holds exactly the writes of some prefix, every one
#    acknowledged before the command started and none that began after it returned
#    (snapshot_writer.py check); the rest of the volume equals a copy made through the
#    live export right after the command returned, though it was overwritten since;
#  - vol@s1 is a read-only export (nbdinfo; qemu-io write fails), listed by nbdinfo
#    --list; a missing snapshot is refused, naming it;
#  - a second snapshot with no writer equals the live export (qemu-img compare);
#  - rollback while served goes through the owner, and the live export then reads as
#    the snapshot; rename and rm while served too;
#  - with an owner killed -9, snap create is refused in one line naming `hbiss lock break`,
#    and works after one.
TEST_NAME=snapshot
source "$(dirname "$0")/lib.sh"
need nbdinfo nbdcopy qemu-io qemu-img python3 cmp
python3 -c "import nbd" 2>/dev/null || skip "python3 libnbd bindings (python3-libnbd) missing"
"$HBISS" snap --help >/dev/null 2>&1 || skip "this hbiss has no snap command"
HERE=$(dirname "$0")
MiB=$((1 << 20))
BASE=$((16 * MiB))  # the writer's region: [16 MiB, 16 MiB + 1024 blocks)
BLOCKS=1024
WRITER_PID=""
HOLDER_PID=""
EXTRA_CLEANUP='for p in $WRITER_PID $HOLDER_PID; do kill -KILL $p; done 2>/dev/null'

# How many writes the writer had acknowledged.
acked() { local n; n=$(tail -n 1 "$WORK/writer.log" 2>/dev/null); echo $(( ${n:-(-1)} + 1 )); }

# hold_volume BYTE: a client writes block 0 of vol with BYTE, flushes, and stays connected
# (so the server keeps owning vol) until HOLDER_PID is killed.
hold_volume() {
  rm -f "$WORK/held"
  python3 - "$U" "$WORK/held" "$1" <<'PY' &
import nbd, sys, time
h = nbd.NBD(); h.connect_uri(sys.argv[1]); h.pwrite(bytes([int(sys.argv[3], 0)]) * 4096, 0)
h.flush()
open(sys.argv[2], "w").close()
time.sleep(600)
PY
  HOLDER_PID=$!
  for _ in $(seq 1 100); do [ -f "$WORK/held" ] && return 0; sleep 0.05; done
  fail "the holding client did not write"
}

check "create vol" hbiss create vol -s 32M
start_server
U=$(uri vol)
check "qemu-io fills [0, 16M)" qemu-io -f raw -c "write -P 0x11 0 16M" -c flush "$U"

# --- a snapshot while a writer is active: through the server, atomic ---------------
python3 "$HERE/snapshot_writer.py" "$U" $BASE $BLOCKS "$WORK/stop" >"$WORK/writer.log" \
  2>"$WORK/writer.err" &
WRITER_PID=$!
for _ in $(seq 1 100); do [ "$(acked)" -ge 200 ] && break; sleep 0.05; done
[ "$(acked)" -ge 200 ] || fail "the writer did not get going: $(cat "$WORK/writer.err")"
LOW=$(acked)
check "snap create while served and written" hbiss snap create vol@s1
HIGH=$(($(acked) + 1))
grep -q "by server" "$WORK/check.out" || fail "snap create did not go through the server: \
$(cat "$WORK/check.out")"
grep -q "SNAP_CREATE s1 done" "$WORK/serve.log" || fail "the server logged no SNAP_CREATE"
# The live export right after the command returned (a flush first; [0, 16M) has no
# writer, so it must equal the snapshot there).
check "flush the live export" qemu-io -f raw -c flush "$U"
check "copy the live export" nbdcopy "$U" "$WORK/live-at-s1.raw"
sleep 0.5  # the writer goes on past the snapshot
touch "$WORK/stop"
wait "$WRITER_PID" || fail "the writer failed: $(cat "$WORK/writer.err")"
WRITER_PID=""
[ "$(acked)" -gt "$HIGH" ] || fail "the writer wrote nothing after the snapshot"
check "overwrite [0, 8M) after the snapshot" qemu-io -f raw -c "write -P 0x22 0 8M" "$U"

check "copy vol@s1" nbdcopy "$(uri vol@s1)" "$WORK/s1.raw"
[ "$(stat -c %s "$WORK/s1.raw")" -eq $((32 * MiB)) ] || fail "vol@s1 is not 32 MiB"
check "vol@s1 [0, 16M) equals the live copy made after snap create" \
  cmp -n $((16 * MiB)) "$WORK/s1.raw" "$WORK/live-at-s1.raw"
check "vol@s1 holds the writes of a prefix, $LOW <= k <= $HIGH" \
  python3 "$HERE/snapshot_writer.py" check "$WORK/s1.raw" $BASE $BLOCKS "$LOW" "$HIGH"
log "snapshot holds $(cat "$WORK/check.out") writes (acknowledged before: $LOW, by return: $HIGH)"
check "the live volume moved on" qemu-io -f raw -c "read -P 0x22 0 8M" "$U"
check "vol@s1 did not" qemu-io -f raw -r -c "read -P 0x11 0 16M" "$(uri vol@s1)"

# --- read-only export ------------------------------------------------------------
check "nbdinfo vol@s1" nbdinfo --json "$(uri vol@s1)"
python3 - "$WORK/check.out" <<'PY' || fail "nbdinfo: vol@s1 must be read-only, 32 MiB"
import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
assert e["is_read_only"] is True, e
assert e["export-size"] == 32 << 20, e
PY
CHECKS=$((CHECKS + 1))
check "nbdinfo vol is writable" nbdinfo --json "$U"
grep -q '"is_read_only": false' "$WORK/check.out" || fail "vol is read-only"
check_fails "qemu-io write to vol@s1" qemu-io -f raw -c "write -P 0x33 0 4k" "$(uri vol@s1)"
# libnbd's strict mode would refuse the write itself: off, the server must answer EPERM.
python3 - "$(uri vol@s1)" <<'PY' || fail "a write to vol@s1 must fail with EPERM"
import errno, nbd, sys
h = nbd.NBD(); h.set_strict_mode(0); h.connect_uri(sys.argv[1])
try:
    h.pwrite(b"x" * 4096, 0)
    sys.exit("the write succeeded")
except nbd.Error as e:
    assert e.errno in (errno.EPERM, "EPERM"), (e.errno, e.string)  # a name in libnbd 1.14
PY
CHECKS=$((CHECKS + 1))
check "nbdinfo --list" nbdinfo --list --json "nbd://127.0.0.1:$PORT"
python3 - "$WORK/check.out" <<'PY' || fail "nbdinfo --list must list vol and vol@s1"
import json, sys
names = {e["export-name"]: e for e in json.load(open(sys.argv[1]))["exports"]}
assert "vol" in names and "vol@s1" in names, names.keys()
assert names["vol@s1"]["is_read_only"] is True
PY
CHECKS=$((CHECKS + 1))
check_fails "a missing snapshot" nbdinfo "$(uri vol@nosuch)"
grep -q "nosuch" "$WORK/check.out" || fail "the refusal does not name the snapshot: \
$(cat "$WORK/check.out")"
check_fails "a missing volume's snapshot" nbdinfo "$(uri novol@s1)"

# --- a quiet snapshot equals the live export ------------------------------------------
check "snap create vol@s2 (no writer)" hbiss snap create vol@s2
check "qemu-img compare vol@s2 with vol" qemu-img compare -f raw -F raw "$(uri vol@s2)" "$U"
check "snap ls while served" hbiss snap ls vol --json
python3 -c 'import json,sys; n=[s["name"] for s in json.load(open(sys.argv[1]))]; \
assert n == ["s1", "s2"], n' "$WORK/check.out" || fail "snap ls: $(cat "$WORK/check.out")"
CHECKS=$((CHECKS + 1))

# --- rollback, rename, rm while a client holds the volume: through the server ------------
hold_volume 0x44
check "snap rollback vol@s1 while served" hbiss snap rollback vol@s1
grep -q "by server" "$WORK/check.out" || fail "rollback did not go through the server"
check "after rollback the live export reads as vol@s1" \
  qemu-img compare -f raw -F raw "$WORK/s1.raw" "$U"
check "snap rename while served" hbiss snap rename vol@s2 vol@quiet
grep -q "by server" "$WORK/check.out" || fail "rename did not go through the server"
check "the renamed snapshot is exported" nbdinfo "$(uri vol@quiet)"
check_fails "the old name is not" nbdinfo "$(uri vol@s2)"
check "snap rm while served" hbiss snap rm vol@quiet
check_fails "a removed snapshot is not exported" nbdinfo "$(uri vol@quiet)"
check_fails "snap create of a taken name while served" hbiss snap create vol@s1
grep -q "already" "$WORK/check.out" || fail "duplicate: $(cat "$WORK/check.out")"

# --- the trash while served: in and out of it through the owner (doc/snapshots.md) --
check "clone vol@s1" hbiss clone vol@s1 tclone
check_fails "snap rm of a snapshot a clone uses" hbiss snap rm vol@s1
grep -q "(tclone)" "$WORK/check.out" && grep -q -- "--trash" "$WORK/check.out" ||
  fail "the refusal does not name the clone and --trash: $(cat "$WORK/check.out")"
check "snap rm --trash while served" hbiss snap rm --trash vol@s1
grep -q "moved snapshot vol@s1 to the trash" "$WORK/check.out" && grep -q "by server" \
  "$WORK/check.out" || fail "snap rm --trash did not go through the server: $(cat "$WORK/check.out")"
check_fails "a trashed snapshot is not exported" nbdinfo "$(uri vol@s1)"
check "the clone reads the trashed snapshot" qemu-io -f raw -r -c "read -P 0x11 0 4k" \
  "$(uri tclone)"
check "trash ls" hbiss trash ls --json
grep -q '"snapshot":"s1".*"children":\["tclone"\]' "$WORK/check.out" ||
  fail "trash ls: $(cat "$WORK/check.out")"
check "rm of the last clone" hbiss rm tclone
grep -q "SNAP_REMOVE  done" "$WORK/serve.log" ||
  fail "the trashed snapshot was not deleted by the owner: $(tail -n 5 "$WORK/serve.log")"
check "snap ls --all after" hbiss snap ls --all vol --json
grep -q trashed "$WORK/check.out" && fail "still trashed: $(cat "$WORK/check.out")"
kill -KILL "$HOLDER_PID"
wait "$HOLDER_PID" 2>/dev/null || true
HOLDER_PID=""

# --- an owner that died: named, with the lock-break command; never broken by snap --------
hold_volume 0x55
kill9_server
kill -KILL "$HOLDER_PID"
wait "$HOLDER_PID" 2>/dev/null || true
HOLDER_PID=""
check_fails "snap create with a dead owner" hbiss snap create vol@s3 --timeout-ms 500
grep -q "does not answer" "$WORK/check.out" && grep -q "hbiss lock break vol" "$WORK/check.out" ||
  fail "the refusal does not say the owner is gone and how to break: $(cat "$WORK/check.out")"
[ "$(wc -l <"$WORK/check.out")" -eq 1 ] || fail "not one line: $(cat "$WORK/check.out")"
check "lock break" hbiss lock break vol
check "snap create once nobody owns it" hbiss snap create vol@s3
grep -q "by server" "$WORK/check.out" && fail "nobody serves vol, yet a server did it"
start_server
check "vol@s3 holds the dead owner's flushed write" qemu-io -f raw -r -c "read -P 0x55 0 4k" \
  "$(uri vol@s3)"

finish
