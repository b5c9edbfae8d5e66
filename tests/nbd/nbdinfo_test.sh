#!/usr/bin/env bash
# nbdinfo against hbiss serve: --list, --json, --can, and --map after writes,
# trims and zeroes (holes for never-written, trimmed and zeroed ranges).
TEST_NAME=nbdinfo
source "$(dirname "$0")/lib.sh"
need nbdinfo nbdsh python3

hbiss create vma -s 64M >/dev/null
hbiss create vmb -s 8M >/dev/null
start_server

# --list: both volumes, nothing else.
check "nbdinfo --list" nbdinfo --list "nbd://127.0.0.1:$PORT"
grep -q 'export="vma"' "$WORK/check.out" || fail "--list lacks vma"
grep -q 'export="vmb"' "$WORK/check.out" || fail "--list lacks vmb"
[ "$(grep -c '^export=' "$WORK/check.out")" -eq 2 ] || fail "--list shows other exports"
nbdinfo --list --json "nbd://127.0.0.1:$PORT" >"$WORK/list.json"
python3 - "$WORK/list.json" <<'PY' || fail "--list --json content"
import json, sys
j = json.load(open(sys.argv[1]))
names = sorted(e["export-name"] for e in j["exports"])
assert names == ["vma", "vmb"], names
PY
CHECKS=$((CHECKS + 1))

# --json of one export: size, flags, block sizes, meta context.
nbdinfo --json "$(uri vma)" >"$WORK/info.json"
python3 - "$WORK/info.json" <<'PY' || fail "--json content"
import json, sys
j = json.load(open(sys.argv[1]))
e = j["exports"][0]
assert j["protocol"] == "newstyle-fixed", j["protocol"]
assert j["structured"] is True
assert e["export-name"] == "vma"
assert e["export-size"] == 64 << 20, e["export-size"]
for k in ["can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_multi_conn",
          "can_cache", "can_df"]:
    assert e[k] is True, k
assert e["is_read_only"] is False
assert e["block_size_minimum"] == 1
assert e["block_size_preferred"] == 4096
assert e["block_size_maximum"] == 32 << 20
assert "base:allocation" in e["contexts"], e["contexts"]
PY
CHECKS=$((CHECKS + 1))
check "--size" test "$(nbdinfo --size "$(uri vmb)")" = 8388608

for c in connect read write flush fua trim zero fast-zero multi-conn cache df structured-reply; do
  check "--can $c" nbdinfo --can "$c" "$(uri vma)"
done
check_fails "--is read-only on a writable export" nbdinfo --is read-only "$(uri vma)"
check_fails "unknown export" nbdinfo "$(uri nosuch)"

# A fresh volume is one hole that reads as zeros.
nbdinfo --map --json "$(uri vma)" >"$WORK/map0.json"
python3 - "$WORK/map0.json" <<'PY' || fail "--map of a fresh volume"
import json, sys
m = json.load(open(sys.argv[1]))
assert m == [{"offset": 0, "length": 64 << 20, "type": 3, "description": "hole,zero"}], m
PY
CHECKS=$((CHECKS + 1))

# Write 0..1M, trim [256K,512K), zero [768K,1M) (may-trim) and [2M,2M+64K)
# with NO_HOLE over fresh space, write 4M..4M+4K.
check "nbdsh writes" nbdsh -u "$(uri vma)" -c '
h.pwrite(b"\xab" * (1 << 20), 0)
h.trim(256 << 10, 256 << 10)
h.zero(256 << 10, 768 << 10)
h.pwrite(b"\x01" * 4096, 4 << 20, nbd.CMD_FLAG_FUA)
h.flush()
'
nbdinfo --map --json "$(uri vma)" >"$WORK/map1.json"
python3 - "$WORK/map1.json" <<'PY' || { cat "$WORK/map1.json"; fail "--map after writes/trims/zeroes"; }
import json, sys
m = json.load(open(sys.argv[1]))
K, M = 1 << 10, 1 << 20
want = [(0, 256 * K, 0), (256 * K, 256 * K, 3), (512 * K, 256 * K, 0),
        (768 * K, 256 * K + 3 * M, 3), (4 * M, 4 * K, 0), (4 * M + 4 * K, 60 * M - 4 * K, 3)]
got = [(e["offset"], e["length"], e["type"]) for e in m]
assert got == want, got
PY
CHECKS=$((CHECKS + 1))
check "--map --totals" nbdinfo --map --totals "$(uri vma)"
grep -q '^ *528384 ' "$WORK/check.out" || { cat "$WORK/check.out"; fail "--totals: data bytes"; }

# Read-only serving.
stop_server
start_server --read-only
check "--is read-only" nbdinfo --is read-only "$(uri vma)"
check_fails "--can write on a read-only server" nbdinfo --can write "$(uri vma)"
check_fails "--can trim on a read-only server" nbdinfo --can trim "$(uri vma)"
check "data survives a restart" nbdsh -u "$(uri vma)" -c '
assert h.pread(4096, 512 << 10) == b"\xab" * 4096
assert h.pread(4096, 4 << 20) == b"\x01" * 4096
assert h.pread(4096, 300 << 10) == bytes(4096)
'
stop_server

# A Unix socket only (no TCP).
SOCK=$WORK/nbd.sock
"$HBISS" --store "$STORE" serve --socket "$SOCK" >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 200); do [ -S "$SOCK" ] && break; sleep 0.05; done
check "nbdinfo over a Unix socket" nbdinfo --size "nbd+unix:///vma?socket=$SOCK"
[ "$(cat "$WORK/check.out")" = 67108864 ] || fail "size over the Unix socket"
grep -q "listening on nbd+unix" "$WORK/serve.log" || fail "socket not logged"
grep -q "listening on nbd://" "$WORK/serve.log" && fail "TCP listener started with only --socket"
stop_server
[ ! -e "$SOCK" ] || fail "the socket file was not removed at shutdown"
CHECKS=$((CHECKS + 1))
finish
