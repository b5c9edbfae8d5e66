#!/usr/bin/env bash
# Installs every Debian 12 package hbiss needs to build, test and benchmark.
#
# THE package list is PACKAGES below: one package per line. To add one, append
# its name there (nothing else needs to change).
#
# Fast path: when dpkg-query says every package is installed, nothing else
# runs (no apt, no network). Otherwise it runs apt-get update (once, and only
# then) and apt-get install of the missing packages. Needs root or sudo.
#
# Usage: scripts/deps.sh [--check]   (--check: only report what is missing; exit 1 if any)
set -euo pipefail

PACKAGES=(
  # build
  cmake
  ninja-build
  g++
  pkg-config
  libgtest-dev
  libprotobuf-dev
  protobuf-compiler
  libisal-dev
  libcli11-dev
  libspdlog-dev
  libfmt-dev
  libbenchmark-dev
  libzstd-dev
  nlohmann-json3-dev
  # fuzzing and sanitizers
  clang
  libclang-rt-14-dev
  # NBD clients and tools for the real-client tests
  qemu-utils
  libnbd-bin
  python3-libnbd
  nbdkit
  fio
  e2fsprogs
  fuse3
  util-linux
  # HDFS: the Go client for interop tests, Java and Maven for the Hadoop cluster
  hdfs-cli
  openjdk-17-jdk-headless
  maven
  # test scripts (curl: the HDFS tests read DataNode metrics over JMX)
  python3
  curl
  procps
  xxd
  python3-matplotlib
  # the VM test (tests/vm): QEMU boots a Linux guest from a busybox initramfs
  qemu-system-x86
  busybox-static
  # hbiss serve as a service: NBD over TLS, metrics, config, systemd
  libgnutls28-dev
  gnutls-bin
  prometheus-cpp-dev
  prometheus
  libsystemd-dev
  libtomlplusplus-dev
  systemd
)

log() { echo "deps: $*" >&2; }

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  if [[ "$status" != "installed" ]]; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  log "all ${#PACKAGES[@]} packages are installed"
  exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
  log "missing: ${missing[*]}"
  exit 1
fi

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo > /dev/null; then
    sudo "$@"
  else
    log "error: need root or sudo to install: ${missing[*]}"
    exit 1
  fi
}

log "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" < /dev/null
log "done"
