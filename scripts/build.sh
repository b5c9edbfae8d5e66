#!/usr/bin/env bash
# Configures (once) and builds hbiss with CMake and Ninja.
#
# This is the developer build: warnings are errors (-DHBISS_WERROR=ON), so new
# code stays warning-free. A plain `cmake` build (a user's, a packager's) has
# HBISS_WERROR off, and scripts/demo.sh, the README's first command, runs this
# script with HBISS_WERROR=OFF, so neither fails because a compiler warns.
#
# Usage: scripts/build.sh [BUILD_DIR] [extra cmake -D options...]
#   BUILD_DIR defaults to build/ in the repository; the executable is BUILD_DIR/hbiss.
# Environment: BUILD_TYPE (default RelWithDebInfo: optimized, with debug info),
#              JOBS (default: number of CPUs),
#              HBISS_WERROR (default ON; OFF lets warnings through). Each run passes
#              it explicitly, so switching it on a build directory rebuilds everything.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${1:-$repo_root/build}"
shift || true
build_type="${BUILD_TYPE:-RelWithDebInfo}"
jobs="${JOBS:-$(nproc)}"
werror="${HBISS_WERROR:-ON}"

cmake -S "$repo_root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type" \
  -DHBISS_WERROR="$werror" "$@" > /dev/null
ninja -C "$build_dir" -j "$jobs"
echo "build: $build_dir/hbiss ($build_type, HBISS_WERROR=$werror)" >&2
