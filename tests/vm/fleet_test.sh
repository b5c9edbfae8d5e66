#!/usr/bin/env bash
# A golden-image fleet with real guests (issue 10): one prepared volume, one snapshot, three
# clones booted at once under QEMU through one `hbiss serve`.
#
#   1. Boot gold (hbiss_mode=write hbiss_big_mib=16, init.sh): the guest makes an ext4
#      filesystem on volume `gold` and writes the golden files (16 MiB + 200 small files,
#      their list as /SHA256SUMS). The sha256 of the export `gold` (nbdcopy) is noted.
#   2. `hbiss snap create gold@base`; the export gold@base must hash the same. Then
#      `hbiss clone gold@base vm1|vm2|vm3`, and `hbiss children` lists them.
#   3. Three QEMU guests start at once, vmN on clone vmN (hbiss_mode=clone hbiss_vm=N): each
#      checks the golden files and that no sibling's /vm* is visible, writes its own files
#      under /vmN with their list as /vmN.SHA256SUMS, syncs, e2fsck -fn, verifies and
#      powers off. The three must have run at the same time (each started before any ended).
#   4. gold and gold@base still hash as in step 1, byte for byte.
#   5. With the server stopped, every clone is exported and checked on the host: e2fsck -fn
#      is clean, debugfs lists exactly the golden entries plus vmN and vmN.SHA256SUMS in
#      the root, and the files debugfs copies out verify against both lists (and the own
#      list is the one the guest printed).
#   6. `hbiss du vmN --json` reports what the clone added (own_size): more than 0 and less
#      than the golden volume's mapped bytes.
#
# Usage: fleet_test.sh HBISS_BINARY GUEST_CACHE_DIR [local|hdfs]
# local (the default) uses a temporary directory store. hdfs uses a fresh directory in
# $HBISS_HDFS_URI: skipped without it, a failure with HBISS_REQUIRE_HDFS=1. QEMU uses KVM
# when the guest boots under it (kvm_boots; HBISS_VM_ACCEL=tcg forces TCG). Exits 77 without
# QEMU or the guest kernel unless HBISS_REQUIRE_VM=1, as the other VM tests.
STORE_KIND=${3:-local}
TEST_NAME=vm_fleet_$STORE_KIND
GUEST_DIR=${2:?usage: $0 HBISS_BINARY GUEST_CACHE_DIR [local|hdfs]}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../nbd/lib.sh"
log() { echo "[$TEST_NAME $(date +%T)] $*"; }

BOOT_TIMEOUT=${HBISS_VM_BOOT_TIMEOUT:-240}
CLONES=3
OWN_FILES=52  # per clone: big, whoami and 50 small files (init.sh, hbiss_mode=clone)
QPIDS=()
EXTRA_CLEANUP='for p in "${QPIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done'

case "$STORE_KIND" in
  local) ;;
  hdfs)
    if [ -z "${HBISS_HDFS_URI:-}" ]; then
      [ "${HBISS_REQUIRE_HDFS:-0}" = 1 ] && fail "HBISS_REQUIRE_HDFS=1 but HBISS_HDFS_URI is not set"
      skip "HBISS_HDFS_URI is not set (no live HDFS cluster)"
    fi
    ;;
  *) fail "the store kind must be local or hdfs, not '$STORE_KIND'" ;;
esac
source "$HERE/guest_lib.sh"
started=$(date +%s)
need_guest qemu-system-x86_64 busybox python3 timeout nbdcopy debugfs e2fsck sha256sum
if [ "$STORE_KIND" = hdfs ]; then
  STORE="${HBISS_HDFS_URI%/}/hbiss-fleet-$(date +%s)-$$"
  "$HBISS" dfs mkdir "$STORE" >/dev/null || fail "cannot create $STORE"
  EXTRA_CLEANUP="$EXTRA_CLEANUP; \"\$HBISS\" dfs rm -r -f \"\$STORE\" >/dev/null 2>&1"
fi
# KVM only when the guest really boots under it: on some nested hosts QEMU aborts setting
# MSR 0x10a (IA32_ARCH_CAPABILITIES) with -cpu host, and without that MSR the kernel can
# hang. The probe boots the guest on an empty null-co disk with a mode init.sh does not
# know: reaching init's verdict within 15 s means KVM works. Otherwise TCG, as vm_boot.
kvm_boots() {
  timeout --kill-after=5 15 qemu-system-x86_64 -machine q35,accel=kvm -cpu "$1" -m 256 \
    -nographic -no-reboot -kernel "$GUEST_DIR/vmlinuz" -initrd "$GUEST_DIR/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 loglevel=4 hbiss_mode=probe" \
    -drive driver=null-co,size=1M,read-zeroes=on,if=virtio -nic none </dev/null \
    >"$WORK/kvm-probe.log" 2>&1 || true
  grep -a -q 'HBISS-VM-RESULT: FAIL unknown' "$WORK/kvm-probe.log"
}
ACCEL=tcg
CPU=max
if [ "${HBISS_VM_ACCEL:-}" != tcg ] && [ -c /dev/kvm ]; then
  for cpu in host host,-arch-capabilities; do
    if kvm_boots "$cpu" 2>/dev/null; then
      ACCEL=kvm
      CPU=$cpu
      break
    fi
  done
fi
log "store $STORE, accel=$ACCEL -cpu $CPU, guest $(cat "$GUEST_DIR/kernel-pkg")"

# start_guest NAME EXPORT KERNEL_ARGS...: starts QEMU in the background on the export,
# its console in $WORK/NAME.log; sets QPID_NAME and T0_NAME. no_timer_check: three TCG
# guests on a loaded host can miss the kernel's early IO-APIC timer check, which panics
# ("IO-APIC + timer doesn't work") before init runs.
start_guest() {
  local name=$1 export=$2
  shift 2
  timeout --kill-after=10 "$BOOT_TIMEOUT" qemu-system-x86_64 \
    -machine "q35,accel=$ACCEL" -cpu "$CPU" -m 384 -smp 1 -nographic -no-reboot \
    -kernel "$GUEST_DIR/vmlinuz" -initrd "$GUEST_DIR/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 loglevel=4 no_timer_check $*" \
    -drive "file=$(uri "$export"),format=raw,if=virtio,cache=none,discard=unmap" \
    -nic none </dev/null >"$WORK/$name.log" 2>&1 &
  QPIDS+=($!)
  eval "QPID_$name=$! T0_$name=$(date +%s.%N)"
}

# wait_guest NAME: waits for QEMU NAME to exit; it must have powered off (exit 0) with one
# verdict line (console_verdict). Sets VERDICT (without the prefix) and END_NAME.
wait_guest() {
  local name=$1 pid t0 qrc=0 out=$WORK/$1.log
  eval "pid=\$QPID_$name t0=\$T0_$name"
  wait "$pid" || qrc=$?
  eval "END_$name=$(date +%s.%N)"
  log "guest $name: QEMU exit $qrc after $(python3 -c 'import sys,time; print(round(time.time()-float(sys.argv[1]),1))' "$t0") s"
  console_verdict "guest $name" "$qrc" "$out"
}

# image_sha EXPORT: the sha256 of the whole export (a volume or VOL@SNAP) read through the
# running server (`hbiss export` takes volumes only).
image_sha() {
  nbdcopy "$(uri "$1")" - | sha256sum | cut -d' ' -f1
}

mapped_of() {
  hbiss info --json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["mapped_bytes"])'
}

# ---- 1. the golden image -------------------------------------------------------------------
check "create the golden volume" hbiss create gold -s 256M
start_server
start_guest gold gold hbiss_mode=write hbiss_big_mib=16
wait_guest gold
case "$VERDICT" in
  "PASS mode=write "*) ;;
  *) tail -n 40 "$WORK/gold.log.txt" >&2; fail "the golden boot: $VERDICT" ;;
esac
GOLD_SUMS=$(grep -a '^HBISS-VM-SUMS ' "$WORK/gold.log.txt" | awk '{print $2}')
[[ "$GOLD_SUMS" =~ ^[0-9a-f]{64}$ ]] || fail "the golden boot printed no HBISS-VM-SUMS line"
CHECKS=$((CHECKS + 1))
GOLD_SHA=$(image_sha gold) || fail "nbdcopy of gold"
GOLD_MAPPED=$(mapped_of gold) || fail "hbiss info gold"
log "golden image: sha256 $GOLD_SHA, $GOLD_MAPPED bytes mapped"

# ---- 2. snapshot and clones ----------------------------------------------------------------
check "hbiss snap create gold@base" hbiss snap create gold@base
base_sha=$(image_sha gold@base) || fail "nbdcopy of gold@base"
[ "$base_sha" = "$GOLD_SHA" ] || fail "gold@base does not hash as gold did"
CHECKS=$((CHECKS + 1))
for i in $(seq 1 $CLONES); do
  check "hbiss clone gold@base vm$i" hbiss clone gold@base "vm$i"
done
hbiss children gold@base >"$WORK/children.out" 2>&1 || { cat "$WORK/children.out" >&2; fail "hbiss children gold@base"; }
for i in $(seq 1 $CLONES); do
  grep -qw "vm$i" "$WORK/children.out" || { cat "$WORK/children.out" >&2; fail "hbiss children does not list vm$i"; }
done
CHECKS=$((CHECKS + 1))

# ---- 3. three guests at once ---------------------------------------------------------------
stop_server
start_server
t_fleet=$(date +%s.%N)
for i in $(seq 1 $CLONES); do
  start_guest "vm$i" "vm$i" hbiss_mode=clone hbiss_vm=$i hbiss_sums=$GOLD_SUMS
done
for i in $(seq 1 $CLONES); do
  wait_guest "vm$i"
  case "$VERDICT" in
    "PASS mode=clone vm=$i files=$OWN_FILES "*) ;;
    *) tail -n 40 "$WORK/vm$i.log.txt" >&2; fail "guest vm$i: $VERDICT" ;;
  esac
  sums=$(grep -a '^HBISS-VM-SUMS ' "$WORK/vm$i.log.txt" | awk '{print $2}')
  [[ "$sums" =~ ^[0-9a-f]{64}$ ]] || fail "guest vm$i printed no HBISS-VM-SUMS line"
  eval "SUMS_vm$i=$sums"
  CHECKS=$((CHECKS + 1))
done
# They ran at the same time: the last one started before the first one ended.
python3 - "$T0_vm3" "$END_vm1" "$END_vm2" "$END_vm3" <<'PY' || fail "the three guests did not overlap"
import sys
last_start, *ends = map(float, sys.argv[1:])
sys.exit(0 if last_start < min(ends) else 1)
PY
CHECKS=$((CHECKS + 1))
log "the fleet booted, wrote and powered off in $(python3 -c 'import sys,time; print(round(time.time()-float(sys.argv[1]),1))' "$t_fleet") s"

# ---- 4. the golden image and its snapshot are unchanged --------------------------------------
for spec in gold gold@base; do
  sha=$(image_sha "$spec") || fail "nbdcopy of $spec"
  [ "$sha" = "$GOLD_SHA" ] || fail "$spec changed: sha256 $sha, was $GOLD_SHA"
  CHECKS=$((CHECKS + 1))
done
log "gold and gold@base are byte for byte as before the clones"
stop_server

# ---- 5. each clone holds the golden files and its own, nothing else -------------------------
golden_root=$(printf '%s\n' . .. lost+found data SHA256SUMS)
for i in $(seq 1 $CLONES); do
  img=$WORK/vm$i.img
  check "hbiss export vm$i" hbiss export "vm$i" "$img"
  check "e2fsck -fn on vm$i's image" e2fsck -fn "$img"
  debugfs -R 'ls -p /' "$img" 2>/dev/null | awk -F/ 'NF > 5 {print $6}' | sort >"$WORK/vm$i.root"
  want=$(printf '%s\nvm%s\nvm%s.SHA256SUMS\n' "$golden_root" "$i" "$i" | sort)
  if [ "$(cat "$WORK/vm$i.root")" != "$want" ]; then
    echo "root of vm$i: $(tr '\n' ' ' <"$WORK/vm$i.root")" >&2
    fail "vm$i's root directory is not the golden entries plus vm$i's own"
  fi
  out=$WORK/vm$i.files
  mkdir -p "$out"
  debugfs -R "rdump /data /vm$i $out" "$img" >/dev/null 2>&1 || fail "debugfs rdump on vm$i"
  for f in SHA256SUMS "vm$i.SHA256SUMS"; do
    debugfs -R "dump /$f $out/$f" "$img" >/dev/null 2>&1 || fail "debugfs dump /$f on vm$i"
  done
  [ "$(sha256sum <"$out/SHA256SUMS" | cut -d' ' -f1)" = "$GOLD_SUMS" ] ||
    fail "vm$i's golden list is not the golden boot's"
  eval "want_own=\$SUMS_vm$i"
  [ "$(sha256sum <"$out/vm$i.SHA256SUMS" | cut -d' ' -f1)" = "$want_own" ] ||
    fail "vm$i's own list is not the one its guest printed"
  (cd "$out" && sha256sum -c --quiet SHA256SUMS "vm$i.SHA256SUMS") >"$WORK/vm$i.check" 2>&1 ||
    { head -n 5 "$WORK/vm$i.check" >&2; fail "vm$i's files do not verify on the host"; }
  [ "$(cat "$out/SHA256SUMS" "$out/vm$i.SHA256SUMS" | wc -l)" -eq $((201 + OWN_FILES)) ] ||
    fail "vm$i's lists do not name $((201 + OWN_FILES)) files"
  rm -rf "$out" "$img"
  CHECKS=$((CHECKS + 6))
  log "vm$i: e2fsck clean; the golden files and its own $OWN_FILES files verify; no sibling's"
done

# ---- 6. hbiss du: what each clone added ----------------------------------------------------
for i in $(seq 1 $CLONES); do
  hbiss du "vm$i" --json >"$WORK/du-vm$i.json" 2>&1 || { cat "$WORK/du-vm$i.json" >&2; fail "hbiss du vm$i --json"; }
  # The head row's own_size: the bytes in the clone's own log (doc/snapshots.md "du").
  added=$(python3 - "$WORK/du-vm$i.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
rows = [r for r in doc["images"] if "snapshot" not in r]
print(int(rows[0]["own_size"]))
PY
  ) || { cat "$WORK/du-vm$i.json" >&2; fail "hbiss du vm$i --json: no own_size in the head row"; }
  [ "$added" -gt 0 ] && [ "$added" -lt "$GOLD_MAPPED" ] ||
    fail "hbiss du says vm$i added $added bytes (expected 0 < added < $GOLD_MAPPED)"
  log "hbiss du: vm$i added $added bytes (the golden image maps $GOLD_MAPPED)"
  CHECKS=$((CHECKS + 1))
done

log "total $(($(date +%s) - started)) s"
finish
