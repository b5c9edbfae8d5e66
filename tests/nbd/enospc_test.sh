#!/usr/bin/env bash
# A full disk must not wedge a volume (issue 8). The local store sits on a
# 32 MiB tmpfs that also holds a filler file. An NBD client (nbdsh) writes
# until the server answers ENOSPC (not EIO), for writes and flushes. Once
# the filler is deleted, writes resume and every acknowledged chunk reads
# back. The client then fills the device for good; after a kill -9, `hbiss
# clean` and a reopen still work on the full device thanks to the volume's
# space reserve, and the data flushed before is there. Needs root (mount);
# exits 77 when mounting a tmpfs is not permitted.
TEST_NAME=enospc
source "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
need nbdsh mount umount
MNT=$WORK/mnt
mkdir -p "$MNT"
mount -t tmpfs -o size=32m tmpfs "$MNT" 2>/dev/null || skip "mount -t tmpfs is not permitted"
EXTRA_CLEANUP="umount -l '$MNT'"
STORE=$MNT/store
mkdir -p "$STORE"
check "filler file" dd if=/dev/zero of="$MNT/filler" bs=1M count=6 status=none

client() {  # client ACTION [VAR=value...]
  local action=$1
  shift
  env URI="$(uri vm)" ACTION="$action" "$@" nbdsh -c "exec(open('$HERE/enospc_client.py').read())"
}

hbiss create vm -s 64M --segment-size 1M >/dev/null
[ -f "$STORE/volumes/vm/reserve" ] || fail "no space reserve after create"
CHECKS=$((CHECKS + 1))
start_server --clean-threshold 0
check "garbage region" client garbage

# 1. Fill the device: ENOSPC, not EIO. 2. Free space (delete the filler) on
# the same connection: writes resume, every acknowledged chunk reads back.
check "fill until ENOSPC, free space, resume" client fill FIRST=4 FILLER="$MNT/filler"
read -r _ acked _ flushed <"$WORK/check.out"
log "first fill: chunks 4..$((acked - 1)) acknowledged, then resumed"
[ "$acked" -gt 5 ] || fail "nothing was written before ENOSPC"
[ ! -e "$MNT/filler" ] || fail "the filler is still there"
grep -q "the store is full" "$WORK/serve.log" || fail "the server did not log the stall"
grep -q "space is back" "$WORK/serve.log" || fail "the server did not log the resume"
CHECKS=$((CHECKS + 3))
check "every acknowledged chunk reads back on a new connection" client verify FIRST=4 LAST=$acked

# 3. Full for good; a crash; clean and reopen on the full device.
check "fill again until ENOSPC" client fill FIRST=$acked
read -r _ acked2 _ flushed2 <"$WORK/check.out"
log "second fill: chunks $acked..$((acked2 - 1)) acknowledged, ..$((flushed2 - 1)) flushed"
kill9_server
avail=$(df --output=avail -B1 "$MNT" | tail -n1)
log "free bytes on the device after the crash: $avail"
check "hbiss clean on the full device" hbiss clean vm
cat "$WORK/check.out"
start_server --clean-threshold 0
check "data after clean and reopen" client verify FIRST=4 LAST=$flushed2
check "writes after clean" client resume FIRST=2
finish
