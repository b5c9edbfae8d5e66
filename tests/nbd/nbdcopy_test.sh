#!/usr/bin/env bash
# nbdcopy round trips: file -> export, export -> export (same server, several
# connections each: multi-conn), export -> file; byte-identical, with holes
# preserved as holes.
TEST_NAME=nbdcopy
source "$(dirname "$0")/lib.sh"
need nbdcopy nbdinfo python3

hbiss create a -s 80M >/dev/null
hbiss create b -s 80M >/dev/null
start_server

python3 - "$WORK/src.raw" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    f.truncate(80 << 20)
    for i in range(0, 80, 5):
        f.seek((i << 20) + i * 4096)
        f.write(os.urandom((1 << 20) + 777))
PY
check "file -> export (4 connections)" nbdcopy -C 4 -R 16 --flush "$WORK/src.raw" "$(uri a)"
check "export -> export (multi-conn both ends)" nbdcopy -C 4 --flush "$(uri a)" "$(uri b)"
check "export -> file" nbdcopy "$(uri b)" "$WORK/out.raw"
check "round trip is byte-identical" cmp "$WORK/src.raw" "$WORK/out.raw"
check "synchronous copy back out" nbdcopy --synchronous "$(uri a)" "$WORK/out2.raw"
check "synchronous round trip is byte-identical" cmp "$WORK/src.raw" "$WORK/out2.raw"
# The destination's zero ranges stayed holes (nbdcopy zeroes or skips them).
nbdinfo --map --totals "$(uri b)" >"$WORK/totals"
data=$(awk '$3 == 0 {print $1}' "$WORK/totals")
[ -n "$data" ] && [ "$data" -le $((17 << 20)) ] && [ "$data" -ge $((16 << 20)) ] ||
  { cat "$WORK/totals"; fail "export b maps $data data bytes, want about 16 MiB"; }
CHECKS=$((CHECKS + 1))
# Copy to null: a read-only pass over the whole export.
check "export -> null:" nbdcopy "$(uri b)" null:
finish
