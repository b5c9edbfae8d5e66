#!/bin/busybox sh
# /init of the VM test's guest (busybox ash). Its disk, /dev/vda, is an hbiss volume that
# QEMU reaches over NBD. The mode comes from the kernel command line:
#
#   hbiss_mode=write   mkfs.ext4; mount; write 64 MiB of random data and 200 small files
#                      (sizes 1..20000 bytes) under /data, plus a 64 MiB scratch file; sync;
#                      store the sha256 list as /SHA256SUMS in the filesystem; print the
#                      scratch file's extents (HBISS-VM-FREED lines), delete it; umount; drop
#                      caches; e2fsck -fn; remount; verify every sha256; fstrim; umount.
#                      hbiss_big_mib=N makes both big files N MiB (fleet_test.sh: 16).
#   hbiss_mode=verify  e2fsck -fn; mount read-only; the list must be the one the write boot
#                      stored (its sha256 is given as hbiss_sums=HEX) and every file must
#                      match it; umount. With hbiss_files=N: the list has N files (a
#                      writer boot's).
#   hbiss_mode=writer  the live-migration workload (migration_test.sh): mkfs.ext4; mount;
#                      then, without pause, for i = 1..hbiss_files (default 200): write
#                      /data/f$i (16..80 KiB of random bytes), fsync it (sync -d), append its
#                      sha256 to /SHA256SUMS, sync, and print `HBISS-VM-FILE i` once it
#                      is durable. Then umount, e2fsck -fn, remount, verify every file
#                      against the list, umount. The host migrates the VM while this runs.
#   hbiss_mode=recover after a writer boot died (host_crash_test.sh): mount (replays the
#                      journal), umount, e2fsck -fn, mount read-only; /SHA256SUMS must
#                      list at least hbiss_files=N files and files 1..N (those the dead
#                      writer reported durable) must match it; umount.
#   hbiss_mode=clone   a clone of a write boot's filesystem (fleet_test.sh), hbiss_vm=N:
#                      e2fsck -fn; mount; the golden list must be the write boot's
#                      (hbiss_sums=HEX) and every golden file must match it; no /vm*
#                      entry may exist (a sibling's writes must not show); write /vmN/big
#                      (4 MiB + N KiB of random data) and 50 small files, their list as
#                      /vmN.SHA256SUMS; sync; umount; e2fsck -fn; remount read-only and
#                      verify both lists; umount. Prints `HBISS-VM-SUMS HEX` of its list.
#
# The last line it prints is the verdict, read by vm_boot_test.sh from the serial console:
#   HBISS-VM-RESULT: PASS mode=... <details>      or      HBISS-VM-RESULT: FAIL <step>
# then it powers the machine off.

# Loaded in this order (each one needs only those before it). prepare_guest.sh copies the
# modules named here into the initramfs.
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk crc16 mbcache jbd2 crc32c_generic ext4"

export PATH=/bin:/usr/sbin
DEV=/dev/vda
MNT=/mnt
BIG_MIB=64
SCRATCH_MIB=64
SMALL_FILES=200

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp && mount -t tmpfs tmpfs /tmp

say() { echo "hbiss-vm: $*"; }
now() { cut -d' ' -f1 /proc/uptime; }
finish() {
  umount "$MNT" 2>/dev/null
  sync
  echo "HBISS-VM-RESULT: $*"
  poweroff -f
  sleep 5
  exit 1  # init exiting panics the kernel; panic=-1 reboots; QEMU -no-reboot then exits
}
fail() { finish "FAIL $*"; }
# run "step" cmd...: runs the command, its output on the console; fails the boot if it fails.
run() {
  step=$1
  shift
  "$@" || fail "$step (exit $?)"
}

MODE=
SUMS=
FILES=
VM=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    hbiss_mode=*) MODE=${arg#hbiss_mode=} ;;
    hbiss_sums=*) SUMS=${arg#hbiss_sums=} ;;
    hbiss_files=*) FILES=${arg#hbiss_files=} ;;
    hbiss_vm=*) VM=${arg#hbiss_vm=} ;;
    hbiss_big_mib=*) BIG_MIB=${arg#hbiss_big_mib=} SCRATCH_MIB=${arg#hbiss_big_mib=} ;;
  esac
done
say "mode=$MODE kernel=$(uname -r) at $(now)s"

for m in $MODULES; do
  insmod "/lib/modules/$m.ko" || fail "insmod $m"
done
i=0
while [ ! -b "$DEV" ]; do
  i=$((i + 1))
  [ $i -le 100 ] || fail "$DEV did not appear"
  sleep 0.1
done
say "$DEV: $(cat /sys/block/vda/size) sectors, discard max" \
  "$(cat /sys/block/vda/queue/discard_max_bytes) bytes"

drop_caches() {
  sync
  blockdev --flushbufs "$DEV"
  echo 3 >/proc/sys/vm/drop_caches
}

# verify_sums WHAT [COUNT]: every file in /SHA256SUMS (COUNT of them, by default the write
# mode's) reads back with its recorded sha256.
verify_sums() {
  want=${2:-$((SMALL_FILES + 1))}
  (cd "$MNT" && sha256sum -c SHA256SUMS >/tmp/check.out 2>&1)
  rc=$?
  ok=$(grep -c ': OK$' /tmp/check.out)
  bad=$(grep -v ': OK$' /tmp/check.out | head -n 3)
  [ $rc -eq 0 ] && [ "$ok" -eq "$want" ] ||
    fail "$1: $ok of $want files verified (rc $rc) $bad"
  say "$1: $ok files verified at $(now)s"
}

if [ "$MODE" = write ]; then
  # A small journal and inode table keep the filesystem's own metadata to a few MiB, so the
  # host can tell the 64 MiB file (kept) from the 64 MiB scratch file (trimmed).
  run "mkfs.ext4" mkfs.ext4 -F -q -N 4096 -J size=4 "$DEV"
  run "mount" mount -t ext4 "$DEV" "$MNT"
  mkdir -p "$MNT/data/small"
  run "write big file" dd if=/dev/urandom of="$MNT/data/big.bin" bs=1M count=$BIG_MIB \
    status=none
  run "write scratch file" dd if=/dev/urandom of="$MNT/scratch.bin" bs=1M \
    count=$SCRATCH_MIB status=none
  n=1
  while [ $n -le $SMALL_FILES ]; do
    # Sizes spread over 1..20000 bytes: partial blocks, one block, several blocks.
    size=$(( (n * 7919) % 20000 + 1 ))
    head -c $size /dev/urandom >"$MNT/data/small/f$n" || fail "write small file $n"
    n=$((n + 1))
  done
  run "sync" sync
  say "wrote ${BIG_MIB}+${SCRATCH_MIB} MiB and $SMALL_FILES small files at $(now)s"
  (cd "$MNT" && find data -type f | sort | xargs sha256sum >SHA256SUMS) ||
    fail "sha256sum of the written files"
  [ "$(wc -l <"$MNT/SHA256SUMS")" -eq $((SMALL_FILES + 1)) ] || fail "SHA256SUMS line count"
  # The scratch file's physical extents, in filesystem blocks: after rm + fstrim the host
  # checks that hbiss reports exactly these ranges as holes.
  bs=$(stat -f -c %S "$MNT")
  filefrag -v "$MNT/scratch.bin" >/tmp/frag.out || fail "filefrag"
  awk -v bs="$bs" -v want=$((SCRATCH_MIB << 20)) '$1 ~ /^[0-9]+:$/ {
      split($0, f, ":"); split(f[3], p, "[.]+"); gsub(/ /, "", f[4]);
      printf "HBISS-VM-FREED %d %d %d\n", p[1], f[4], bs; n += f[4] }
    END { if (n * bs != want) exit 1 }' /tmp/frag.out >/tmp/freed ||
    fail "scratch extents do not add up to ${SCRATCH_MIB} MiB: $(cat /tmp/frag.out)"
  cat /tmp/freed
  run "rm scratch" rm "$MNT/scratch.bin"
  run "sync" sync
  run "umount" umount "$MNT"
  drop_caches
  run "e2fsck -fn after writing" e2fsck -fn "$DEV"
  say "e2fsck clean at $(now)s"
  run "remount" mount -t ext4 "$DEV" "$MNT"
  verify_sums "after remount"
  trimmed=$(fstrim -v "$MNT") || fail "fstrim"
  say "fstrim: $trimmed"
  trimmed=$(echo "$trimmed" | sed -n 's/.*: \([0-9]*\) bytes trimmed.*/\1/p')
  [ "${trimmed:-0}" -ge $((SCRATCH_MIB << 20)) ] || fail "fstrim trimmed only $trimmed bytes"
  list=$(sha256sum "$MNT/SHA256SUMS" | cut -d' ' -f1)
  run "umount" umount "$MNT"
  drop_caches
  echo "HBISS-VM-SUMS $list"
  finish "PASS mode=write files=$((SMALL_FILES + 1)) trimmed=$trimmed sums=$list uptime=$(now)s"
elif [ "$MODE" = verify ]; then
  [ -n "$SUMS" ] || fail "no hbiss_sums= on the kernel command line"
  run "e2fsck -fn after the server restart" e2fsck -fn "$DEV"
  run "mount read-only" mount -t ext4 -o ro "$DEV" "$MNT"
  list=$(sha256sum "$MNT/SHA256SUMS" | cut -d' ' -f1)
  [ "$list" = "$SUMS" ] || fail "SHA256SUMS differs from the write boot's: $list != $SUMS"
  want=${FILES:-$((SMALL_FILES + 1))}
  verify_sums "after the server restart" "$want"
  [ ! -e "$MNT/scratch.bin" ] || fail "the deleted scratch file is back"
  run "umount" umount "$MNT"
  finish "PASS mode=verify files=$want sums=$list uptime=$(now)s"
elif [ "$MODE" = writer ]; then
  FILES=${FILES:-200}
  run "mkfs.ext4" mkfs.ext4 -F -q -N 4096 -J size=4 "$DEV"
  run "mount" mount -t ext4 "$DEV" "$MNT"
  mkdir -p "$MNT/data"
  : >"$MNT/SHA256SUMS"
  run "sync" sync
  say "writer: $FILES files from $(now)s"
  i=1
  while [ $i -le "$FILES" ]; do
    size=$(( ((i * 7919) % 65536) + 16384 ))
    head -c $size /dev/urandom >"$MNT/data/f$i" || fail "write file $i"
    sync -d "$MNT/data/f$i" || fail "fsync file $i"
    (cd "$MNT" && sha256sum "data/f$i" >>SHA256SUMS) || fail "sha256sum of file $i"
    sync || fail "sync after file $i"
    echo "HBISS-VM-FILE $i $(now)"
    i=$((i + 1))
  done
  say "writer: done at $(now)s"
  run "umount" umount "$MNT"
  drop_caches
  run "e2fsck -fn after the writer" e2fsck -fn "$DEV"
  run "remount" mount -t ext4 "$DEV" "$MNT"
  verify_sums "after the writer" "$FILES"
  list=$(sha256sum "$MNT/SHA256SUMS" | cut -d' ' -f1)
  run "umount" umount "$MNT"
  drop_caches
  finish "PASS mode=writer files=$FILES sums=$list uptime=$(now)s"
elif [ "$MODE" = recover ]; then
  [ -n "$FILES" ] || fail "no hbiss_files= on the kernel command line"
  run "mount (journal replay)" mount -t ext4 "$DEV" "$MNT"
  run "umount after the journal replay" umount "$MNT"
  drop_caches
  run "e2fsck -fn after the crash" e2fsck -fn "$DEV"
  run "mount read-only" mount -t ext4 -o ro "$DEV" "$MNT"
  listed=$(wc -l <"$MNT/SHA256SUMS")
  [ "$listed" -ge "$FILES" ] || fail "SHA256SUMS lists $listed files, fewer than $FILES"
  head -n "$FILES" "$MNT/SHA256SUMS" >/tmp/want
  (cd "$MNT" && sha256sum -c /tmp/want >/tmp/check.out 2>&1)
  rc=$?
  ok=$(grep -c ': OK$' /tmp/check.out)
  [ $rc -eq 0 ] && [ "$ok" -eq "$FILES" ] ||
    fail "after the crash: $ok of $FILES files verified (rc $rc) $(grep -v ': OK$' /tmp/check.out | head -n 3)"
  say "after the crash: $ok files verified of $listed listed at $(now)s"
  run "umount" umount "$MNT"
  finish "PASS mode=recover files=$FILES listed=$listed uptime=$(now)s"
elif [ "$MODE" = clone ]; then
  [ -n "$SUMS" ] || fail "no hbiss_sums= on the kernel command line"
  case "$VM" in ''|*[!0-9]*) fail "hbiss_vm= must be a number, not '$VM'" ;; esac
  run "e2fsck -fn of the golden filesystem" e2fsck -fn "$DEV"
  run "mount" mount -t ext4 "$DEV" "$MNT"
  list=$(sha256sum "$MNT/SHA256SUMS" | cut -d' ' -f1)
  [ "$list" = "$SUMS" ] || fail "the golden SHA256SUMS differs: $list != $SUMS"
  verify_sums "golden files"
  others=$(ls -d "$MNT"/vm* 2>/dev/null)
  [ -z "$others" ] || fail "a sibling's files are visible: $others"
  mkdir -p "$MNT/vm$VM/small" || fail "mkdir /vm$VM"
  run "write vm$VM/big" dd if=/dev/urandom of="$MNT/vm$VM/big" bs=1K \
    count=$((4096 + VM)) status=none
  n=1
  while [ $n -le 50 ]; do
    head -c $(( (n * 7919 + VM * 104729) % 30000 + 1 )) /dev/urandom \
      >"$MNT/vm$VM/small/f$n" || fail "write vm$VM/small/f$n"
    n=$((n + 1))
  done
  echo "vm$VM" >"$MNT/vm$VM/whoami" || fail "write vm$VM/whoami"
  (cd "$MNT" && find "vm$VM" -type f | sort | xargs sha256sum >"vm$VM.SHA256SUMS") ||
    fail "sha256sum of vm$VM's files"
  own=$(sha256sum "$MNT/vm$VM.SHA256SUMS" | cut -d' ' -f1)
  run "sync" sync
  say "vm$VM: wrote its files at $(now)s"
  run "umount" umount "$MNT"
  drop_caches
  run "e2fsck -fn after vm$VM's writes" e2fsck -fn "$DEV"
  run "mount read-only" mount -t ext4 -o ro "$DEV" "$MNT"
  verify_sums "golden files after the writes"
  (cd "$MNT" && sha256sum -c "vm$VM.SHA256SUMS" >/tmp/own.out 2>&1) ||
    fail "vm$VM's own files: $(grep -v ': OK$' /tmp/own.out | head -n 3)"
  count=$(grep -c ': OK$' /tmp/own.out)
  run "umount" umount "$MNT"
  echo "HBISS-VM-SUMS $own"
  finish "PASS mode=clone vm=$VM files=$count sums=$own uptime=$(now)s"
else
  fail "unknown hbiss_mode '$MODE'"
fi
