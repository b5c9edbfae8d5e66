#!/usr/bin/env bash
# A real Linux guest under QEMU (TCG) whose virtio disk is an hbiss volume, reached by
# QEMU's own NBD client over 127.0.0.1. No guest network.
#
#   1. Boot 1 (hbiss_mode=write, see init.sh): the guest makes an ext4 filesystem, writes
#      64 MiB + 200 small files + a 64 MiB scratch file, stores their sha256 list in the
#      filesystem, deletes the scratch file, e2fsck -fn, remounts and verifies, fstrims.
#      It must print `HBISS-VM-RESULT: PASS`.
#   2. Block status (nbdinfo --map): every block of the deleted scratch file (the guest
#      printed its extents) is a hole now, and the data extents total 64..96 MiB: fstrim
#      reached hbiss and freed the space.
#   3. hbiss serve stops with SIGTERM (clean shutdown); `hbiss info` shows mapped bytes in
#      the same range, and equal to what block status showed. The server restarts: block
#      status is unchanged (the trims were persisted, not only the writes).
#   4. Boot 2 (hbiss_mode=verify): e2fsck -fn, mount read-only; the stored list must be the
#      one boot 1 printed (its sha256 goes in on the kernel command line) and every file
#      must match it. A third boot given a wrong list checksum must report FAIL, which shows
#      that the verify boot really compares.
#
# Usage: vm_boot_test.sh HBISS_BINARY GUEST_CACHE_DIR
# The guest (Debian's kernel + an initramfs) is built once into GUEST_CACHE_DIR by
# prepare_guest.sh. Exits 77 (skipped) when QEMU/busybox are missing or the kernel cannot be
# downloaded, unless HBISS_REQUIRE_VM=1, which turns those into failures.
TEST_NAME=vm_boot
GUEST_DIR=${2:?usage: $0 HBISS_BINARY GUEST_CACHE_DIR}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../nbd/lib.sh"

BOOT_TIMEOUT=${HBISS_VM_BOOT_TIMEOUT:-300}
VOLUME_MIB=512
BIG_MIB=64
SCRATCH_MIB=64

source "$HERE/guest_lib.sh"
started=$(date +%s)
need_guest qemu-system-x86_64 busybox nbdinfo python3 timeout
log "guest: $(cat "$GUEST_DIR/kernel-pkg"), prepared in $(($(date +%s) - started)) s"

# boot NAME KERNEL_ARGS...: boots the guest on volume `disk`; the console goes to
# $WORK/NAME.log; sets VERDICT to the guest's HBISS-VM-RESULT line (without the prefix).
boot() {
  local name=$1
  shift
  local out=$WORK/$name.log t0 qrc=0
  t0=$(date +%s)
  timeout --kill-after=10 "$BOOT_TIMEOUT" qemu-system-x86_64 \
    -machine q35,accel=tcg -cpu max -m 512 -smp 2 -nographic -no-reboot \
    -kernel "$GUEST_DIR/vmlinuz" -initrd "$GUEST_DIR/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 loglevel=4 $*" \
    -drive "file=$(uri disk),format=raw,if=virtio,cache=none,discard=unmap" \
    -nic none </dev/null >"$out" 2>&1 || qrc=$?
  log "boot $name: QEMU exit $qrc after $(($(date +%s) - t0)) s"
  console_verdict "boot $name" "$qrc" "$out"
}

# check_map STAGE: block status must show every block the guest freed as a hole or zeroes,
# and 64..96 MiB of data in all. Prints the data bytes.
check_map() {
  nbdinfo --map --json "$(uri disk)" >"$WORK/map-$1.json" ||
    fail "$1: nbdinfo --map failed"
  python3 - "$WORK/map-$1.json" "$WORK/freed" "$1" $VOLUME_MIB $BIG_MIB $SCRATCH_MIB <<'PY'
import json, sys
path, freed_path, stage = sys.argv[1:4]
volume, big, scratch = (int(a) << 20 for a in sys.argv[4:7])
extents = json.load(open(path))
pos = 0
for e in extents:
    assert e["offset"] == pos, f"{stage}: map has a gap or overlap at {pos}: {e}"
    pos += e["length"]
assert pos == volume, f"{stage}: map covers {pos} bytes, volume is {volume}"
def data_in(lo, hi):  # bytes in [lo, hi) that block status reports as data (type bit 0 clear)
    return sum(max(0, min(hi, e["offset"] + e["length"]) - max(lo, e["offset"]))
               for e in extents if not (e["type"] & 1))
freed = [tuple(map(int, l.split()[1:4])) for l in open(freed_path) if l.strip()]
total_freed = sum(n * bs for _, n, bs in freed)
assert total_freed == scratch, f"{stage}: the guest reported {total_freed} freed bytes"
for start, n, bs in freed:
    d = data_in(start * bs, (start + n) * bs)
    assert d == 0, f"{stage}: {d} bytes of the trimmed range {start * bs}+{n * bs} are still data"
holes = sum(e["length"] for e in extents if e["type"] & 1)
data = data_in(0, volume)
assert holes > 0, f"{stage}: no hole extents at all"
# The kept 64 MiB file is data; without the trim the scratch file would add 64 MiB more. The
# filesystem's own metadata (4 MiB journal, 1 MiB inode table, bitmaps) stays well below
# half of that.
assert big <= data <= big + scratch // 2, f"{stage}: {data} bytes of data, expected " \
    f"{big}..{big + scratch // 2}"
print(data)
PY
}

hbiss create disk -s ${VOLUME_MIB}M >/dev/null
start_server

# ---- boot 1: write ---------------------------------------------------------------------
boot write hbiss_mode=write
case "$VERDICT" in
  "PASS mode=write "*) ;;
  *) tail -n 40 "$WORK/write.log.txt" >&2; fail "boot write: $VERDICT" ;;
esac
CHECKS=$((CHECKS + 1))
SUMS=$(grep -a '^HBISS-VM-SUMS ' "$WORK/write.log.txt" | awk '{print $2}')
[[ "$SUMS" =~ ^[0-9a-f]{64}$ ]] || fail "boot write printed no HBISS-VM-SUMS line"
grep -a '^HBISS-VM-FREED ' "$WORK/write.log.txt" >"$WORK/freed" ||
  fail "boot write printed no HBISS-VM-FREED lines"
log "the guest freed $(wc -l <"$WORK/freed") extents of its scratch file"

data_before=$(check_map before-restart) || fail "block status after boot write"
CHECKS=$((CHECKS + 1))
log "block status: $data_before bytes of data; every trimmed block is a hole"

# ---- restart the server ----------------------------------------------------------------
stop_server
CHECKS=$((CHECKS + 1))
hbiss info --json disk >"$WORK/info.json" || fail "hbiss info"
mapped=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["mapped_bytes"])' \
  "$WORK/info.json") || fail "hbiss info --json has no mapped_bytes"
log "hbiss info: mapped $mapped bytes"
[ "$mapped" -ge $((BIG_MIB << 20)) ] && [ "$mapped" -le $(((BIG_MIB + SCRATCH_MIB / 2) << 20)) ] ||
  fail "hbiss info shows $mapped mapped bytes, expected $BIG_MIB..$((BIG_MIB + SCRATCH_MIB / 2)) MiB"
[ "$mapped" -eq "$data_before" ] ||
  fail "hbiss info shows $mapped mapped bytes but block status showed $data_before"
CHECKS=$((CHECKS + 2))

start_server
data_after=$(check_map after-restart) || fail "block status after the restart"
[ "$data_after" -eq "$data_before" ] ||
  fail "block status changed across the restart: $data_before -> $data_after data bytes"
CHECKS=$((CHECKS + 2))

# ---- boot 2: verify after the restart ----------------------------------------------------
boot verify hbiss_mode=verify hbiss_sums=$SUMS
[ "$VERDICT" = "PASS mode=verify files=201 sums=$SUMS ${VERDICT##* }" ] ||
  { tail -n 40 "$WORK/verify.log.txt" >&2; fail "boot verify: $VERDICT"; }
CHECKS=$((CHECKS + 1))

# ---- boot 3: the verify boot must notice a list that is not the stored one ---------------
wrong=$(printf '%s' "$SUMS" | sha256sum | cut -d' ' -f1)
boot negative hbiss_mode=verify hbiss_sums=$wrong
case "$VERDICT" in
  "FAIL SHA256SUMS differs"*) ;;
  *) fail "boot negative: a wrong list checksum was not detected: $VERDICT" ;;
esac
CHECKS=$((CHECKS + 1))

log "total $(($(date +%s) - started)) s"
finish
