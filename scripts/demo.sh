#!/usr/bin/env bash
# The README's first command: installs what is needed, builds hbiss, and runs
# the main job on the embedded default store (a local directory, see
# `hbiss --help`): it creates a volume "demo" from a small disk image
# (an ext4 file system made with mkfs.ext4) and then
#   * when this build has `hbiss serve`: serves the store over NBD on
#     127.0.0.1:$DEMO_PORT, shows `nbdinfo` of the export and copies it back
#     with nbdcopy, comparing it with the image;
#   * otherwise: exports the volume again and compares it with the image.
#
# Usage: scripts/demo.sh [--serve-forever]
#   --serve-forever  keep `hbiss serve` running in the foreground afterwards (Ctrl-C stops it)
# Environment: BUILD_DIR (default build/), DEMO_PORT (default 10809), HBISS_STORE (the store).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
build_dir="${BUILD_DIR:-$repo_root/build}"
port="${DEMO_PORT:-10809}"
forever=0
[[ "${1:-}" == "--serve-forever" ]] && forever=1

say() { echo "demo: $*" >&2; }

bash scripts/deps.sh
# A user's build: a compiler warning must not stop the demo (developers and CI
# build with -Werror through scripts/build.sh and scripts/test.sh).
HBISS_WERROR=OFF bash scripts/build.sh "$build_dir"
hbiss="$build_dir/hbiss"

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill -TERM "$server_pid" 2> /dev/null || true; wait "$server_pid" 2> /dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# A small, realistic disk image: a 64 MiB ext4 file system holding a few files.
say "making a 64 MiB ext4 image"
truncate -s 64M "$work/disk.img"
mkdir -p "$work/files"
head -c 3M /dev/urandom > "$work/files/random.bin"
cp "$repo_root/README.md" "$work/files/" 2> /dev/null || echo "hello from hbiss" > "$work/files/hello.txt"
mkfs.ext4 -q -F -d "$work/files" "$work/disk.img"

"$hbiss" rm demo 2> /dev/null || true
say "hbiss import demo disk.img   (store: ${HBISS_STORE:-default, see hbiss --help})"
"$hbiss" import demo "$work/disk.img"
"$hbiss" ls -l
"$hbiss" info demo

# `hbiss --help` lists the subcommands this build has.
if "$hbiss" --help 2> /dev/null | grep -qE '^[[:space:]]+serve([[:space:]]|$)'; then
  # ---- serve over NBD --------------------------------------------------------------
  say "hbiss serve --listen 127.0.0.1:$port"
  "$hbiss" serve --listen "127.0.0.1:$port" &
  server_pid=$!
  for _ in $(seq 50); do
    nbdinfo --list "nbd://127.0.0.1:$port" > /dev/null 2>&1 && break
    sleep 0.2
  done
  say "nbdinfo nbd://127.0.0.1:$port/demo"
  nbdinfo "nbd://127.0.0.1:$port/demo"
  nbdcopy "nbd://127.0.0.1:$port/demo" "$work/copy.img"
  cmp "$work/disk.img" "$work/copy.img"
  say "OK: the export served over NBD equals the image"
  if [[ $forever -eq 1 ]]; then
    say "serving nbd://127.0.0.1:$port/demo until Ctrl-C"
    wait "$server_pid" || true
    server_pid=""
  fi
else
  # ---- no NBD server in this build: an export round trip -----------------------------
  say "hbiss export demo copy.img"
  "$hbiss" export demo "$work/copy.img"
  cmp "$work/disk.img" "$work/copy.img"
  say "OK: the exported volume equals the image"
fi
