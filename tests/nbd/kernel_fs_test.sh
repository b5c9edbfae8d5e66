#!/usr/bin/env bash
# A kernel filesystem on an hbiss export: nbdfuse exposes the export as a
# file, a loop device turns it into a block device, then mkfs.ext4, mount,
# write files, e2fsck, remount and verify, delete, fstrim, and block status
# must show the space freed. Finally the server restarts and the kept file and
# the filesystem are checked again. (No kernel NBD client on this machine, so
# nbdfuse + loop is how the kernel reaches the export.)
TEST_NAME=kernel_fs
source "$(dirname "$0")/lib.sh"
need nbdfuse nbdinfo losetup mkfs.ext4 e2fsck fstrim mount umount sha256sum
[ "$(id -u)" -eq 0 ] || skip "needs root for losetup and mount"
[ -c /dev/fuse ] || skip "/dev/fuse is missing"

MNT=$WORK/fuse
FS=$WORK/fs
mkdir -p "$MNT" "$FS"
LOOP=""
FUSE_PID=""
unmount_all() {
  mountpoint -q "$FS" && umount "$FS"
  [ -n "$LOOP" ] && losetup -d "$LOOP"
  LOOP=""
  if mountpoint -q "$MNT"; then fusermount3 -u "$MNT" 2>/dev/null || umount "$MNT"; fi
  if [ -n "$FUSE_PID" ]; then
    for _ in $(seq 1 100); do kill -0 "$FUSE_PID" 2>/dev/null || break; sleep 0.05; done
  fi
  FUSE_PID=""
  return 0
}
EXTRA_CLEANUP=unmount_all

attach() {
  rm -f "$WORK/fuse.pid"
  nbdfuse -P "$WORK/fuse.pid" "$MNT" "$(uri disk)" >"$WORK/nbdfuse.log" 2>&1 &
  for _ in $(seq 1 100); do [ -s "$WORK/fuse.pid" ] && break; sleep 0.05; done
  [ -s "$WORK/fuse.pid" ] || { cat "$WORK/nbdfuse.log"; fail "nbdfuse did not start"; }
  FUSE_PID=$(cat "$WORK/fuse.pid")
  [ -f "$MNT/nbd" ] || fail "nbdfuse exposes no file"
  LOOP=$(losetup -f --show "$MNT/nbd") || skip "losetup cannot attach a loop device here"
}

data_bytes() { nbdinfo --map --totals "$(uri disk)" | awk '$3 == 0 {print $1}' | head -n1; }

hbiss create disk -s 512M >/dev/null
start_server
attach
check "mkfs.ext4" mkfs.ext4 -q -F "$LOOP"
check "mount" mount "$LOOP" "$FS"
for i in 1 2 3 4; do
  dd if=/dev/urandom of="$FS/file$i" bs=1M count=16 status=none
done
(cd "$FS" && sha256sum file*) >"$WORK/sums"
check "sync" sync
check "umount" umount "$FS"
check "e2fsck after writing" e2fsck -fn "$LOOP"
check "remount" mount "$LOOP" "$FS"
check "files read back intact after remount" bash -c "cd '$FS' && sha256sum -c '$WORK/sums'"
before=$(data_bytes)
[ "${before:-0}" -ge $((64 << 20)) ] || fail "block status shows only ${before:-0} data bytes"
CHECKS=$((CHECKS + 1))
rm "$FS/file1" "$FS/file2" "$FS/file3"
check "sync after delete" sync
check "fstrim" fstrim -v "$FS"
after=$(data_bytes)
log "data bytes in block status: $before before fstrim, $after after"
[ "$after" -le $((before - (40 << 20))) ] || fail "fstrim freed too little: $before -> $after"
CHECKS=$((CHECKS + 1))
check "umount" umount "$FS"
check "e2fsck after fstrim" e2fsck -fn "$LOOP"
unmount_all

# Survives a clean server restart.
stop_server
start_server
attach
check "e2fsck after restart" e2fsck -fn "$LOOP"
check "mount after restart" mount -o ro "$LOOP" "$FS"
check "kept file intact after restart" bash -c "cd '$FS' && grep file4 '$WORK/sums' | sha256sum -c -"
unmount_all
finish
