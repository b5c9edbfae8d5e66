#!/usr/bin/env bash
# Installs what is needed, builds, and runs every hbiss test. The README's
# second command; .ci/run calls it.
#
# Steps:
#   1. scripts/deps.sh (Debian packages), scripts/install-hadoop.sh (Hadoop jars)
#   2. scripts/build.sh into $BUILD_DIR (default build/). Every build here (this one, the
#      fuzz build and the sanitizer build) has -DHBISS_WERROR=ON: warnings fail CI.
#   3. starts one HDFS cluster for the whole run (scripts/hdfs-cluster) and
#      exports HBISS_HDFS_URI, HBISS_HDFS_CLUSTER_DIR and HBISS_REQUIRE_HDFS=1,
#      so a test that needs HDFS fails instead of skipping
#   4. ctest over the whole build, with a per-test timeout (HBISS_REQUIRE_VM=1: the VM
#      boot test fails instead of skipping when it cannot get its kernel)
#   5. a fuzz build (clang) and its four fuzz runs, then a sanitizer (ASan + UBSan) build of
#      the whole tree with clang, which also checks the thread-safety annotations
#      (-Wthread-safety -Werror), and its ctest
#   6. stops the cluster (trap on exit), prints each step's result, and ends with
#      ctest's summary line. Exits non-zero when any step failed.
#
# Environment:
#   BUILD_DIR            build directory (default: <repo>/build)
#   HBISS_TEST_TIMEOUT   seconds per test (default 900)
#   HBISS_HDFS_BASE_PORT first port of the test cluster (default 19800; it uses P..P+42)
#   CTEST_JOBS           parallel tests (default 2: the in-process unit tests run two at a
#                        time; every test that uses the shared HDFS cluster, restarts its
#                        daemons, serves NBD to real clients or boots a guest is RUN_SERIAL
#                        (hbiss_test SERIAL, hbiss_serial_tests in CMake) and runs alone)
#   HBISS_SKIP_SANITIZE=1  skip the clang sanitizer build and its ctest (step 5)
#   HBISS_SKIP_FUZZ=1      skip the fuzz runs (step 5)
#   HBISS_ASAN_VM=1        also run the guest-boot tests (label vm) under ASan
set -uo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
build_dir="${BUILD_DIR:-$repo_root/build}"
timeout_s="${HBISS_TEST_TIMEOUT:-900}"
ctest_jobs="${CTEST_JOBS:-2}"
log_dir="$build_dir/test-logs"

log() { echo "test.sh: $*" >&2; }

# Step results, printed at the end: "name: ok|FAILED (seconds since the previous step)".
declare -a results=()
failed=0
step_t0=$SECONDS
record() {  # record NAME RC
  local took=$((SECONDS - step_t0))
  step_t0=$SECONDS
  if [[ $2 -eq 0 ]]; then
    results+=("$1: ok (${took} s)")
  else
    results+=("$1: FAILED (exit $2, ${took} s)")
    failed=1
  fi
}

# ---- 1. dependencies --------------------------------------------------------------
bash scripts/deps.sh || { log "scripts/deps.sh failed"; exit 1; }
if [[ -f scripts/install-hadoop.sh ]]; then
  bash scripts/install-hadoop.sh || { log "scripts/install-hadoop.sh failed"; exit 1; }
fi

# ---- 2. build ------------------------------------------------------------------------
HBISS_WERROR=ON bash scripts/build.sh "$build_dir" || { log "build failed"; exit 1; }
mkdir -p "$log_dir"
record "dependencies and build ($build_dir)" 0

# ---- 3. the HDFS cluster, once per run -------------------------------------------------
cluster_started=0
stop_cluster() {
  if [[ $cluster_started -eq 1 ]]; then
    log "stopping the HDFS cluster in $HBISS_HDFS_CLUSTER_DIR"
    python3 scripts/hdfs-cluster stop --dir "$HBISS_HDFS_CLUSTER_DIR" > /dev/null 2>&1 || true
    cluster_started=0
  fi
}
trap stop_cluster EXIT
trap 'exit 130' INT TERM

if [[ -f scripts/hdfs-cluster ]]; then
  export HBISS_HDFS_CLUSTER_DIR="${HBISS_HDFS_CLUSTER_DIR:-$repo_root/.hdfs-cluster-test}"
  export HBISS_REQUIRE_HDFS=1
  log "starting the HDFS cluster in $HBISS_HDFS_CLUSTER_DIR"
  cluster_started=1
  if uri=$(python3 scripts/hdfs-cluster start --dir "$HBISS_HDFS_CLUSTER_DIR" \
             --base-port "${HBISS_HDFS_BASE_PORT:-19800}" \
             2> "$log_dir/hdfs-cluster-start.log" | tail -n 1) && [[ "$uri" == hdfs://* ]]; then
    export HBISS_HDFS_URI="$uri"
    log "HDFS cluster up at $HBISS_HDFS_URI"
    record "hdfs cluster start" 0
  else
    # Tests that need HDFS fail (HBISS_REQUIRE_HDFS=1); the others still run.
    log "the HDFS cluster did not start; see $log_dir/hdfs-cluster-start.log"
    tail -n 20 "$log_dir/hdfs-cluster-start.log" >&2 || true
    record "hdfs cluster start" 1
  fi
fi

# ---- 4. every test ---------------------------------------------------------------------
# The VM test (tests/vm) fetches a Debian kernel through apt; here that must work, so it
# fails instead of skipping when it cannot.
export HBISS_REQUIRE_VM=1
ctest_log="$log_dir/ctest.log"
ctest --test-dir "$build_dir" --output-on-failure --timeout "$timeout_s" -j "$ctest_jobs" \
  2>&1 | tee "$ctest_log"
ctest_rc=${PIPESTATUS[0]}
record "ctest ($build_dir)" "$ctest_rc"

# ---- 5a. fuzz runs ------------------------------------------------------------------------
# libFuzzer targets need clang: one build directory with -DHBISS_FUZZ=ON holds them (its
# libraries are instrumented for the fuzzers, so only the fuzz targets are built there).
# Each of the four targets runs for HBISS_FUZZ_SECONDS (default 60) from its seed corpus.
if [[ "${HBISS_SKIP_FUZZ:-0}" != 1 ]]; then
  fuzz_dir="$build_dir-fuzz"
  fuzz_secs="${HBISS_FUZZ_SECONDS:-60}"
  if cmake -S "$repo_root" -B "$fuzz_dir" -G Ninja -DCMAKE_C_COMPILER=clang \
       -DCMAKE_CXX_COMPILER=clang++ -DHBISS_FUZZ=ON -DHBISS_WERROR=ON \
       > "$log_dir/fuzz-build.log" 2>&1 &&
     ninja -C "$fuzz_dir" -j "${JOBS:-$(nproc)}" nbd_fuzz hdfs_wire_fuzz volume_fuzz \
       nbd_volume_fuzz >> "$log_dir/fuzz-build.log" 2>&1; then
    record "fuzz build ($fuzz_dir)" 0
    bash tests/nbd/fuzz.sh "$fuzz_dir/nbd/nbd_fuzz" "$fuzz_secs" > "$log_dir/fuzz-nbd.log" 2>&1
    rc=$?; record "fuzz nbd handshake+requests (${fuzz_secs}s)" $rc
    [[ $rc -eq 0 ]] || tail -n 30 "$log_dir/fuzz-nbd.log" >&2
    # The engine: Volume ops against the crash model, and NBD streams down to
    # a VolumeExport. Crashing inputs are kept in $log_dir/fuzz-artifacts/.
    HBISS_FUZZ_ARTIFACTS="$log_dir/fuzz-artifacts/volume_fuzz" bash tests/volume/fuzz.sh \
      "$fuzz_dir/volume/volume_fuzz" "$fuzz_secs" > "$log_dir/fuzz-volume.log" 2>&1
    rc=$?; record "fuzz volume engine ops vs model (${fuzz_secs}s)" $rc
    [[ $rc -eq 0 ]] || tail -n 30 "$log_dir/fuzz-volume.log" >&2
    HBISS_FUZZ_ARTIFACTS="$log_dir/fuzz-artifacts/nbd_volume_fuzz" bash tests/nbd/fuzz.sh \
      "$fuzz_dir/nbd/nbd_volume_fuzz" "$fuzz_secs" > "$log_dir/fuzz-nbd-volume.log" 2>&1
    rc=$?; record "fuzz nbd requests down to the engine (${fuzz_secs}s)" $rc
    [[ $rc -eq 0 ]] || tail -n 30 "$log_dir/fuzz-nbd-volume.log" >&2
    mkdir -p "$fuzz_dir/corpus/hdfs_wire"
    timeout $((fuzz_secs + 60)) "$fuzz_dir/hdfs/hdfs_wire_fuzz" -max_total_time="$fuzz_secs" \
      -rss_limit_mb=1024 "$fuzz_dir/corpus/hdfs_wire" > "$log_dir/fuzz-hdfs.log" 2>&1
    rc=$?; record "fuzz hdfs rpc+packet parsers (${fuzz_secs}s)" $rc
    [[ $rc -eq 0 ]] || tail -n 30 "$log_dir/fuzz-hdfs.log" >&2
  else
    tail -n 30 "$log_dir/fuzz-build.log" >&2
    record "fuzz build ($fuzz_dir)" 1
  fi
fi

# ---- 5b. sanitizer build, with clang ----------------------------------------------------
# The whole suite again, built with clang, AddressSanitizer + UBSan (issue #3), against the
# same HDFS cluster. Any sanitizer report fails the test that triggered it. Being clang, the
# build also checks the lock rules written with util/thread_annotations.h (-Wthread-safety,
# with -Werror: GCC does not check them), so one build serves both (a separate clang build
# cost CI a quarter of an hour). The guest-boot tests (label vm: a QEMU guest's boot and
# shutdown take most of their minutes) run in the plain pass only, to keep CI under its
# hour; the same server paths run under ASan in the NBD script tests (tests/nbd), which
# drive it with real clients. HBISS_ASAN_VM=1 runs them too.
if [[ "${HBISS_SKIP_SANITIZE:-0}" != 1 ]]; then
  san_dir="$build_dir-asan"
  if HBISS_WERROR=ON bash scripts/build.sh "$san_dir" -DHBISS_SANITIZE=ON \
       -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ > "$log_dir/asan-build.log" 2>&1; then
    record "clang build, ASan+UBSan, -Wthread-safety -Werror ($san_dir)" 0
    export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
    # plain_only: tests that wait more than they run hbiss code (see hbiss_test in
    # CMakeLists.txt), run once in the plain pass.
    san_exclude=(-LE 'vm|plain_only')
    [[ "${HBISS_ASAN_VM:-0}" == 1 ]] && san_exclude=(-LE plain_only)
    ctest --test-dir "$san_dir" --output-on-failure --timeout "$timeout_s" -j "$ctest_jobs" \
      "${san_exclude[@]}" > "$log_dir/ctest-asan.log" 2>&1
    rc=$?
    grep -E '^[0-9]+% tests passed|tests failed|\*\*\*Failed|Not Run|Total Test time' \
      "$log_dir/ctest-asan.log" >&2
    record "ctest under ASan+UBSan ($san_dir)" $rc
  else
    grep -E 'error|warning' "$log_dir/asan-build.log" | head -n 30 >&2
    tail -n 30 "$log_dir/asan-build.log" >&2
    record "clang build, ASan+UBSan, -Wthread-safety -Werror ($san_dir)" 1
  fi
fi

# ---- 6. summary ------------------------------------------------------------------------
echo
echo "==== hbiss test summary ($((SECONDS / 60)) min in all) ===="
for r in "${results[@]}"; do echo "  $r"; done
# End with ctest's own summary line ("NN% tests passed, N tests failed out of M").
summary=$(grep -E '^[0-9]+% tests passed' "$ctest_log" | tail -n 1)
if [[ -z "$summary" ]]; then
  summary="ctest printed no summary (exit $ctest_rc)"
  failed=1
fi
stop_cluster
echo "$summary"
exit $failed
