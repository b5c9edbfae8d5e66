#!/usr/bin/env bash
# The server-wide memory budget holds for a real process (issue 8): `hbiss
# serve --memory-limit 64M` with 16 volumes written at once by 16 NBD
# clients (one each, 1 MiB writes, 32 MiB per volume and no FLUSH until the
# end, so without a budget every volume would keep its data in its open
# 64 MiB segment: 512 MiB). The server's peak resident set (VmHWM) must stay
# within
#     RSS of the idle server + 64 MiB + 16 * 4 MiB
# and every chunk must read back.
#
# Why that bound (doc/memory.md): the 64 MiB limit covers write buffers
# (32 MiB), CRC tables of closed segments (16 MiB) and the read cache
# (16 MiB, unused on the local store). Outside it, per connection and volume:
# the request being served (1 MiB payload here, one in flight per client),
# its extent map (< 64 KiB for 32 MiB written), the CRC vectors of its
# in-memory segments (about 66 KiB per 64 MiB segment, at most three), and
# its threads' stacks as far as they are touched: 4 MiB each is ample for
# all of that. Without the budget the peak is several hundred MiB over the
# bound (HBISS_MEMORY_LIMIT=2G runs the same test against a 2 GiB limit, and
# it fails).
TEST_NAME=memory_limit
source "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
need python3
python3 -c 'import nbd' 2>/dev/null || skip "python3 nbd (libnbd) is not installed"
LIMIT=${HBISS_MEMORY_LIMIT:-64M}
VOLUMES=16
MIB_PER_VOLUME=32

for i in $(seq 1 $VOLUMES); do
  hbiss create "v$i" -s 64M --segment-size 64M >/dev/null
done
start_server --memory-limit "$LIMIT" --clean-threshold 0
status() { awk -v f="$1:" '$1 == f { print $2 * 1024 }' "/proc/$SERVER_PID/status"; }
idle=$(status VmRSS)
[ -n "$idle" ] || fail "no VmRSS for the server"
bound=$((idle + (64 + VOLUMES * 4) * 1048576))

pids=()
for i in $(seq 1 $VOLUMES); do
  python3 "$HERE/memory_limit_writer.py" "$(uri "v$i")" "$i" $MIB_PER_VOLUME \
    >"$WORK/writer$i.log" 2>&1 &
  pids+=($!)
done
failed=0
for i in $(seq 1 $VOLUMES); do
  if ! wait "${pids[$((i - 1))]}"; then
    cat "$WORK/writer$i.log" >&2
    failed=1
  fi
done
[ "$failed" = 0 ] || fail "a writer failed (or its data did not read back)"
CHECKS=$((CHECKS + VOLUMES))
hwm=$(status VmHWM)
log "limit $LIMIT: idle RSS $((idle / 1048576)) MiB, peak (VmHWM) $((hwm / 1048576)) MiB," \
    "bound $((bound / 1048576)) MiB; $VOLUMES volumes x $MIB_PER_VOLUME MiB written"
if [ "${HBISS_SANITIZED:-0}" = 1 ]; then
  log "sanitizer build: the RSS bound is not checked (ASan's shadow memory and quarantine" \
      "are most of the resident set)"
else
  [ "$hwm" -le "$bound" ] || fail "peak RSS $hwm bytes is over the bound $bound"
  CHECKS=$((CHECKS + 1))
fi
finish
