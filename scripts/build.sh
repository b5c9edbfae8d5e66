#!/usr/bin/env bash
# Configures (once) and builds hbiss with CMake and Ninja.
#
# Usage: scripts/build.sh [BUILD_DIR] [extra cmake -D options...]
#   BUILD_DIR defaults to build/ in the repository; the executable is BUILD_DIR/hbiss.
# Environment: BUILD_TYPE (default RelWithDebInfo: optimized, with debug info),
#              JOBS (default: number of CPUs).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${1:-$repo_root/build}"
shift || true
build_type="${BUILD_TYPE:-RelWithDebInfo}"
jobs="${JOBS:-$(nproc)}"

cmake -S "$repo_root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type" "$@" > /dev/null
ninja -C "$build_dir" -j "$jobs"
echo "build: $build_dir/hbiss ($build_type)" >&2
