#!/usr/bin/env bash
# The snapshot difference over NBD (doc/snapshots.md "Differences over NBD"), with real
# clients, on a volume served by `hbiss serve`:
#  - write, `hbiss snap create vol@s1`, then write, trim and zero known extents;
#  - nbdinfo lists qemu:dirty-bitmap:s1 among the export's contexts, and
#    `nbdinfo --map=qemu:dirty-bitmap:s1` reports exactly those extents dirty;
#  - qemu-img map with x-dirty-bitmap (QEMU then reports dirty as "data": false) agrees;
#  - base:allocation and the bitmap negotiated together (libnbd) each get their answer;
#  - a backup tool copies only the dirty extents from the head onto a copy of vol@s1, and
#    the result equals the head byte for byte (cmp), having copied a small part of it;
#  - on the snapshot export vol@s2, qemu:dirty-bitmap:s1 is the s1 -> s2 difference, and
#    writes after s2 are in the head's map only; an unknown snapshot is not selected;
#  - a clone of vol@s1 offers qemu:dirty-bitmap:vol@s1: what the clone wrote;
#  - with two servers on the store, the one that only reads vol (B) serves a map that holds
#    a write the owner (A) acknowledged but had not flushed (B asks A to flush first).
TEST_NAME=dirty_bitmap
source "$(dirname "$0")/lib.sh"
need nbdinfo nbdcopy qemu-img qemu-io python3 cmp
python3 -c "import nbd" 2>/dev/null || skip "python3 libnbd bindings (python3-libnbd) missing"
HERE=$(dirname "$0")
KiB=1024
MiB=$((1 << 20))
CLIENT="$HERE/dirty_bitmap_client.py"

# dirty_list URI CONTEXT: the dirty extents ("OFFSET LENGTH" lines) nbdinfo --map reports.
dirty_list() {
  nbdinfo --map="$2" "$1" >"$WORK/map.out" || fail "nbdinfo --map=$2 $1: $(cat "$WORK/map.out")"
  awk '$3 == 1 { print $1, $2 }' "$WORK/map.out"
}

# expect_dirty WHAT GOT EXPECTED: two "OFFSET LENGTH" lists must be equal.
expect_dirty() {
  [ "$2" = "$3" ] || fail "$1: dirty extents
got:
$2
expected:
$3"
  CHECKS=$((CHECKS + 1))
}

check "create vol" hbiss create vol -s 64M
start_server
U=$(uri vol)
check "fill [0, 16M)" qemu-io -f raw -c "write -P 0x11 0 16M" -c flush "$U"
check "snap create vol@s1" hbiss snap create vol@s1

# The changes since s1, and the dirty extents they make (4 KiB blocks, merged):
check "write [1M, 1M+64K)" qemu-io -f raw -c "write -P 0x22 1M 64K" "$U"
check "write one block at 5M+4K" qemu-io -f raw -c "write -P 0x33 $((5 * MiB + 4 * KiB)) 4K" "$U"
check "unaligned write at 9M+100" qemu-io -f raw -c "write -P 0x34 $((9 * MiB + 100)) 10" "$U"
check "trim [12M, 12M+128K)" qemu-io -f raw -c "discard 12M 128K" "$U"
check "zero [14M, 14M+8K)" qemu-io -f raw -c "write -z 14M 8K" "$U"
check "write [40M, 41M) (never written before)" qemu-io -f raw -c "write -P 0x44 40M 1M" "$U"
EXPECTED="$((1 * MiB)) $((64 * KiB))
$((5 * MiB + 4 * KiB)) $((4 * KiB))
$((9 * MiB)) $((4 * KiB))
$((12 * MiB)) $((128 * KiB))
$((14 * MiB)) $((8 * KiB))
$((40 * MiB)) $((1 * MiB))"

# --- the contexts are listed; nbdinfo's map --------------------------------------------
check "nbdinfo --json vol" nbdinfo --json "$U"
python3 - "$WORK/check.out" <<'PY' ||
import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
assert {"base:allocation", "qemu:dirty-bitmap:s1"} <= set(e["contexts"]), e["contexts"]
PY
  fail "nbdinfo must list base:allocation and qemu:dirty-bitmap:s1"
CHECKS=$((CHECKS + 1))
expect_dirty "nbdinfo --map=qemu:dirty-bitmap:s1 vol" "$(dirty_list "$U" qemu:dirty-bitmap:s1)" \
  "$EXPECTED"
log "nbdinfo --map=qemu:dirty-bitmap:s1:"
cat "$WORK/map.out"

# --- qemu-img map through x-dirty-bitmap: dirty shows as "data": false ------------------
OPTS="driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$PORT,export=vol"
check "qemu-img map x-dirty-bitmap" qemu-img map --output=json --image-opts \
  "$OPTS,x-dirty-bitmap=qemu:dirty-bitmap:s1"
GOT=$(python3 - "$WORK/check.out" <<'PY'
import json, sys
out = []
for e in json.load(open(sys.argv[1])):
    if e["data"]:
        continue
    if out and out[-1][0] + out[-1][1] == e["start"]:
        out[-1][1] += e["length"]
    else:
        out.append([e["start"], e["length"]])
print("\n".join(f"{a} {b}" for a, b in out))
PY
)
expect_dirty "qemu-img map x-dirty-bitmap=qemu:dirty-bitmap:s1" "$GOT" "$EXPECTED"

# --- both contexts on one connection -------------------------------------------------
check "base:allocation and qemu:dirty-bitmap:s1 together" \
  python3 "$CLIENT" extents "$U" base:allocation qemu:dirty-bitmap:s1
cp "$WORK/check.out" "$WORK/both.out"
expect_dirty "the bitmap's answer next to base:allocation" \
  "$(awk '$1 == "qemu:dirty-bitmap:s1" && $4 == 1 { print $2, $3 }' "$WORK/both.out")" "$EXPECTED"
# base:allocation: [0,16M) data but the trimmed and zeroed holes, [40M,41M) data.
ALLOC=$(awk '$1 == "base:allocation" && $4 == 0 { print $2, $3 }' "$WORK/both.out")
expect_dirty "base:allocation's data extents" "$ALLOC" "0 $((12 * MiB))
$((12 * MiB + 128 * KiB)) $((2 * MiB - 128 * KiB))
$((14 * MiB + 8 * KiB)) $((2 * MiB - 8 * KiB))
$((40 * MiB)) $((1 * MiB))"

# --- a backup of just the changes ----------------------------------------------------
check "copy vol@s1 (the previous backup)" nbdcopy "$(uri vol@s1)" "$WORK/backup.raw"
check "copy the dirty extents onto it" python3 "$CLIENT" backup "$U" s1 "$WORK/backup.raw"
COPIED=$(cat "$WORK/check.out")
check "copy the head" nbdcopy "$U" "$WORK/head.raw"
check "the backup equals the head byte for byte" cmp "$WORK/backup.raw" "$WORK/head.raw"
[ "$COPIED" -eq $((MiB + 64 * KiB + 4 * KiB + 4 * KiB + 128 * KiB + 8 * KiB)) ] ||
  fail "the backup copied $COPIED bytes, not just the dirty extents"
CHECKS=$((CHECKS + 1))
log "backup: copied $COPIED of $((64 * MiB)) bytes, then cmp with the head: equal"

# --- a snapshot export, and writes after the next snapshot -----------------------------
check "snap create vol@s2" hbiss snap create vol@s2
check "write [50M, 50M+4K) after s2" qemu-io -f raw -c "write -P 0x55 50M 4K" "$U"
expect_dirty "vol@s2: qemu:dirty-bitmap:s1 is s1 -> s2" \
  "$(dirty_list "$(uri vol@s2)" qemu:dirty-bitmap:s1)" "$EXPECTED"
expect_dirty "vol: qemu:dirty-bitmap:s2 has only the write after s2" \
  "$(dirty_list "$U" qemu:dirty-bitmap:s2)" "$((50 * MiB)) $((4 * KiB))"
check "nbdinfo --json vol@s2" nbdinfo --json "$(uri vol@s2)"
python3 - "$WORK/check.out" <<'PY' || fail "vol@s2 must offer s1 only"
import json, sys
c = set(json.load(open(sys.argv[1]))["exports"][0]["contexts"])
assert "qemu:dirty-bitmap:s1" in c and "qemu:dirty-bitmap:s2" not in c, c
PY
CHECKS=$((CHECKS + 1))
check_fails "an unknown snapshot is not selected" nbdinfo --map=qemu:dirty-bitmap:nosuch "$U"
check_fails "nor a later one on a snapshot export" nbdinfo --map=qemu:dirty-bitmap:s2 \
  "$(uri vol@s2)"

# --- a clone: the parent snapshot it was made from, as qemu:dirty-bitmap:vol@s1 -----------
check "clone vol@s1 as c1" hbiss clone vol@s1 c1
check "write [2M, 2M+8K) to c1" qemu-io -f raw -c "write -P 0x66 2M 8K" "$(uri c1)"
expect_dirty "c1: qemu:dirty-bitmap:vol@s1 is what the clone wrote" \
  "$(dirty_list "$(uri c1)" qemu:dirty-bitmap:vol@s1)" "$((2 * MiB)) $((8 * KiB))"
grep -q "dirty bitmap 's1' of 'vol'" "$WORK/serve.log" || fail "the server logged no bitmap build"
CHECKS=$((CHECKS + 1))
stop_server

# --- two servers: a reader's map holds what the owner acknowledged, flushed or not ---------
if "$HBISS" serve --help 2>&1 | grep -q -- --peer-listen; then
  check "snap create vol@s3 (nobody serves vol)" hbiss snap create vol@s3
  start_node A
  start_node B
  rm -f "$WORK/written"
  # Owner A: an acknowledged write it has not flushed; the client stays until killed.
  python3 - "$(node_uri A vol)" "$WORK/written" <<'PY' &
import nbd, sys, time
h = nbd.NBD(); h.connect_uri(sys.argv[1]); h.pwrite(b"z" * 8192, 3 << 20)
open(sys.argv[2], "w").close()
time.sleep(600)
PY
  WRITER_PID=$!
  EXTRA_CLEANUP='kill -KILL $WRITER_PID 2>/dev/null'
  for _ in $(seq 1 100); do [ -f "$WORK/written" ] && break; sleep 0.05; done
  [ -f "$WORK/written" ] || fail "the writer on server A did not write"
  expect_dirty "reader B: qemu:dirty-bitmap:s3 holds A's unflushed write" \
    "$(dirty_list "$(node_uri B vol)" qemu:dirty-bitmap:s3)" "$((3 * MiB)) $((8 * KiB))"
  kill -KILL "$WRITER_PID"
  wait "$WRITER_PID" 2>/dev/null || true
  stop_node A
  stop_node B
else
  log "this hbiss has no serve --peer-listen: the two-server part is skipped"
fi

log "PASS ($CHECKS checks)"
