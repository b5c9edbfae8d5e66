#!/usr/bin/env bash
# qemu-img (info, convert in and back out, compare, map) and qemu-io
# (pattern writes with FUA, verified reads, write -z, discard, aio_write +
# aio_flush) against hbiss serve.
TEST_NAME=qemu
source "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3

hbiss create img -s 96M >/dev/null
hbiss create io -s 64M >/dev/null
hbiss create bench -s 96M >/dev/null
start_server

# --- qemu-img ---------------------------------------------------------------
check "qemu-img info" qemu-img info --output=json -f raw "$(uri img)"
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["virtual-size"]==96<<20, j' \
  "$WORK/check.out" || fail "qemu-img info size"

# A random image with data, zero runs and an unaligned tail of data.
python3 - "$WORK/src.raw" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    f.truncate(96 << 20)
    rnd = os.urandom(1 << 20)
    for mb in range(0, 96, 3):          # data in every third MiB
        f.seek(mb << 20); f.write(rnd[mb * 1000:] + rnd[:mb * 1000])
    f.seek((50 << 20) + 12345); f.write(os.urandom(5000))   # unaligned data
PY
check "qemu-img convert into the export" \
  qemu-img convert -n -f raw -O raw "$WORK/src.raw" "$(uri img)"
check "qemu-img compare after convert" qemu-img compare -f raw -F raw "$WORK/src.raw" "$(uri img)"
check "qemu-img convert back out" qemu-img convert -f raw -O raw "$(uri img)" "$WORK/out.raw"
check "round trip is byte-identical" cmp "$WORK/src.raw" "$WORK/out.raw"
check "qemu-img map" qemu-img map --output=json -f raw "$(uri img)"
python3 - "$WORK/check.out" <<'PY' || fail "qemu-img map shows the holes"
import json, sys
m = json.load(open(sys.argv[1]))
data = sum(e["length"] for e in m if e["data"])
zero = sum(e["length"] for e in m if e["zero"] and not e["data"])
# 32 MiB of data written (every third MiB) plus the unaligned piece; the rest
# was never written by convert (it skips zeros) and must be reported as holes.
assert 32 << 20 <= data <= (33 << 20) + 8192, data
assert data + zero == 96 << 20, (data, zero)
PY
CHECKS=$((CHECKS + 1))
# Change one byte in the export: compare must notice.
check "qemu-io one-byte write" qemu-io -f raw -c "write -P 0x77 $((7 << 20)) 1" "$(uri img)"
check_fails "qemu-img compare notices a changed byte" \
  qemu-img compare -f raw -F raw "$WORK/src.raw" "$(uri img)"

# --- qemu-io ----------------------------------------------------------------
U=$(uri io)
# Pattern writes (qemu-io sets FUA with -f) and verified reads, unaligned too.
check "qemu-io FUA pattern writes" qemu-io -f raw \
  -c "write -f -P 0x5a 0 1M" \
  -c "write -f -P 0xa5 1M 64k" \
  -c "write -f -P 0x11 3000000 12345" \
  -c "read -P 0x5a 0 1M" -c "read -P 0xa5 1M 64k" -c "read -P 0x11 3000000 12345" "$U"
check "qemu-io write -z and discard" qemu-io -f raw \
  -c "write -z 4096 8192" -c "read -P 0 4096 8192" -c "read -P 0x5a 0 4096" \
  -c "read -P 0x5a 12288 4096" \
  -c "write -z -u 512k 256k" -c "read -P 0 512k 256k" \
  -c "discard 1M 32k" -c "read -P 0 1M 32k" -c "read -P 0xa5 $(((1 << 20) + 32768)) 32k" "$U"
check "qemu-io aio_write + aio_flush" qemu-io -f raw \
  -c "aio_write -P 0x21 8M 64k" -c "aio_write -P 0x22 $(((8 << 20) + 65536)) 64k" \
  -c "aio_write -P 0x23 $(((8 << 20) + 131072)) 64k" -c "aio_flush" \
  -c "read -P 0x21 8M 64k" -c "read -P 0x22 $(((8 << 20) + 65536)) 64k" \
  -c "read -P 0x23 $(((8 << 20) + 131072)) 64k" "$U"
# Verification really checks: a wrong pattern must fail.
qemu-io -f raw -c "read -P 0x99 0 4096" "$U" >"$WORK/neg.out" 2>&1 || true
grep -q "Pattern verification failed" "$WORK/neg.out" || fail "qemu-io verification is not effective"
CHECKS=$((CHECKS + 1))

# qemu-img bench at depth 32 must not stall (the Nagle/delayed-ACK pitfall).
check "qemu-img bench writes, depth 32" timeout 60 qemu-img bench -f raw -w -d 32 -c 20000 \
  -s 4096 "$(uri bench)"
check "qemu-img bench reads, depth 32" timeout 60 qemu-img bench -f raw -d 32 -c 20000 \
  -s 4096 "$(uri bench)"

# After a clean restart everything acknowledged is still there.
stop_server
start_server
check "qemu-io reads after restart" qemu-io -f raw -r \
  -c "read -P 0x5a 0 4096" -c "read -P 0 4096 8192" -c "read -P 0x11 3000000 12345" \
  -c "read -P 0 1M 32k" -c "read -P 0x23 $(((8 << 20) + 131072)) 64k" "$(uri io)"
check "qemu-img compare after restart (with the changed byte restored)" bash -c "
  printf '\\x$(xxd -s $((7 << 20)) -l 1 -p "$WORK/src.raw")' |
    dd of='$WORK/byte' bs=1 count=1 status=none &&
  qemu-io -f raw -c 'write -P 0x$(xxd -s $((7 << 20)) -l 1 -p "$WORK/src.raw") $((7 << 20)) 1' '$(uri img)' &&
  qemu-img compare -f raw -F raw '$WORK/src.raw' '$(uri img)'"
finish
