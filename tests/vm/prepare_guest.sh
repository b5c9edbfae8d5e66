#!/usr/bin/env bash
# Prepares the Linux guest for the VM test, once, in a cache directory:
#   OUTDIR/vmlinuz             Debian's kernel (from the package linux-image-amd64 points to)
#   OUTDIR/initramfs.cpio.gz   busybox-static + the host's mke2fs, e2fsck and filefrag with
#                              the libraries ldd lists, the virtio/ext4 modules, and init.sh
#                              of this folder as /init
#   OUTDIR/stamp               what they were built from; a rerun with the same kernel
#                              package, init.sh and this script reuses them
#
# The kernel package is resolved by its exact name from the linux-image-amd64 metapackage's
# dependency (never a glob: a glob downloads every kernel variant, 1.6 GB) and fetched with
# `apt-get download`, then unpacked with `dpkg -x`; nothing is installed.
#
# Usage: prepare_guest.sh OUTDIR
# Exit:  0 ready; 77 the kernel could not be resolved or downloaded (no network or no apt
#        lists) and no earlier kernel is cached; 1 any other error.
set -euo pipefail
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH

OUT=${1:?usage: $0 OUTDIR}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

log() { echo "[prepare_guest] $*" >&2; }
die() { echo "[prepare_guest] ERROR: $*" >&2; exit 1; }
unavailable() { echo "[prepare_guest] UNAVAILABLE: $*" >&2; exit 77; }

for t in apt-cache apt-get dpkg busybox gzip ldd flock sha256sum; do
  command -v "$t" >/dev/null 2>&1 || die "$t is not installed"
done
BUSYBOX=$(command -v busybox)
# Only a static busybox works inside the initramfs without its libraries.
if ldd "$BUSYBOX" >/dev/null 2>&1; then
  die "$BUSYBOX is dynamically linked; install busybox-static"
fi
for t in mke2fs e2fsck filefrag; do
  [ -x "/usr/sbin/$t" ] || [ -x "/sbin/$t" ] || die "$t is missing (install e2fsprogs)"
done

# Two test runs sharing one build directory must not build the cache at the same time.
exec 9>"$OUT/.lock"
flock 9

# ---- the kernel ----------------------------------------------------------------------
# The metapackage depends on exactly one versioned image package, e.g.
# linux-image-6.1.0-56-amd64. Its name is resolved from the local apt lists (no network).
resolve_kernel_pkg() {
  apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances linux-image-amd64 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9][^ ]*-amd64$/ {print $2}' | head -n 1
}

cached_kernel() { [ -s "$OUT/vmlinuz" ] && [ -d "$OUT/modules" ] && [ -s "$OUT/kernel-pkg" ]; }

pkg=$(resolve_kernel_pkg || true)
if [ -z "$pkg" ]; then
  if cached_kernel; then
    log "cannot resolve linux-image-amd64 now; reusing the cached $(cat "$OUT/kernel-pkg")"
    pkg=$(cat "$OUT/kernel-pkg")
  else
    unavailable "apt-cache does not know linux-image-amd64 (no apt lists? run apt-get update)"
  fi
fi

if ! cached_kernel || [ "$(cat "$OUT/kernel-pkg")" != "$pkg" ]; then
  log "downloading $pkg"
  dl=$OUT/download
  rm -rf "$dl" "$OUT/kroot"
  mkdir -p "$dl"
  # apt-get download writes into the current directory. As root it warns that the _apt
  # user cannot write there; that is harmless.
  if ! (cd "$dl" && apt-get download -q "$pkg" >"$OUT/download.log" 2>&1); then
    tail -n 5 "$OUT/download.log" >&2 || true
    if cached_kernel; then
      log "download of $pkg failed; reusing the cached $(cat "$OUT/kernel-pkg")"
      pkg=$(cat "$OUT/kernel-pkg")
    else
      unavailable "apt-get download $pkg failed (no network to the Debian mirror?)"
    fi
  else
    debs=("$dl"/*.deb)
    [ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] || die "expected one .deb in $dl"
    dpkg -x "${debs[0]}" "$OUT/kroot"
    vmlinuz=$(ls "$OUT"/kroot/boot/vmlinuz-* 2>/dev/null | head -n 1)
    [ -n "$vmlinuz" ] || die "no /boot/vmlinuz-* in ${debs[0]}"
    kver=${vmlinuz##*/vmlinuz-}
    moddir=$OUT/kroot/lib/modules/$kver/kernel
    [ -d "$moddir" ] || die "no modules for $kver in ${debs[0]}"
    rm -rf "$OUT/modules"
    mkdir -p "$OUT/modules"
    cp "$vmlinuz" "$OUT/vmlinuz"
    # Keep only the modules the guest loads, not the whole unpacked package.
    for m in $(sed -n 's/^MODULES="\(.*\)"$/\1/p' "$HERE/init.sh"); do
      f=$(find "$moddir" -name "$m.ko" | head -n 1)
      [ -n "$f" ] || die "module $m.ko is not in $pkg (compressed modules are not supported)"
      cp "$f" "$OUT/modules/"
    done
    echo "$kver" >"$OUT/kernel-version"
    echo "$pkg" >"$OUT/kernel-pkg"
    rm -rf "$dl" "$OUT/kroot" "$OUT/initramfs.cpio.gz" "$OUT/stamp"
    log "kernel $kver ready"
  fi
fi

# ---- the initramfs ---------------------------------------------------------------------
stamp="kernel=$pkg init=$(sha256sum <"$HERE/init.sh" | cut -c1-16)"
stamp="$stamp prepare=$(sha256sum <"$HERE/prepare_guest.sh" | cut -c1-16)"
stamp="$stamp busybox=$(sha256sum <"$BUSYBOX" | cut -c1-16)"
stamp="$stamp e2fs=$(cat /usr/sbin/mke2fs /usr/sbin/e2fsck | sha256sum | cut -c1-16)"
if [ -s "$OUT/initramfs.cpio.gz" ] && [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$stamp" ]; then
  log "cached guest is current ($pkg)"
  exit 0
fi

log "building the initramfs"
root=$OUT/rootfs
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/sbin,etc,proc,sys,dev,mnt,tmp,lib/modules}
cp "$BUSYBOX" "$root/bin/busybox"
# Applet links are made at pack time so /init can use them from its first line.
for a in $("$BUSYBOX" --list); do
  case "$a" in busybox | mke2fs | mkfs.ext2 | e2fsck | fsck.ext4) continue ;; esac
  ln -s busybox "$root/bin/$a"
done
# e2fsprogs from the host, with their shared libraries at the paths ldd names.
for t in mke2fs e2fsck filefrag; do
  src=/usr/sbin/$t
  [ -x "$src" ] || src=/sbin/$t
  cp -L "$src" "$root/usr/sbin/$t"
  for lib in $(ldd "$src" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
    mkdir -p "$root$(dirname "$lib")"
    [ -e "$root$lib" ] || cp -L "$lib" "$root$lib"
  done
done
ln -s mke2fs "$root/usr/sbin/mkfs.ext4"
[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$root/etc/"
ln -s /proc/mounts "$root/etc/mtab"
cp "$OUT"/modules/*.ko "$root/lib/modules/"
install -m 0755 "$HERE/init.sh" "$root/init"

(cd "$root" && find . | "$BUSYBOX" cpio -o -H newc 2>/dev/null | gzip -6) \
  >"$OUT/initramfs.cpio.gz.tmp"
mv "$OUT/initramfs.cpio.gz.tmp" "$OUT/initramfs.cpio.gz"
rm -rf "$root"
echo "$stamp" >"$OUT/stamp"
log "guest ready: $OUT/vmlinuz ($(cat "$OUT/kernel-version")), initramfs" \
  "$(du -k "$OUT/initramfs.cpio.gz" | cut -f1) KiB"
