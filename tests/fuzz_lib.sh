# Shared by the libFuzzer runners (tests/nbd/fuzz.sh, tests/volume/fuzz.sh).
# Source it after setting DEFAULT_TARGET, passing the runner's arguments:
#   [BINARY_OR_TARGET] [SECONDS]
# The first is a fuzz binary, or the name of a fuzz target to build (clang,
# -DHBISS_FUZZ=ON, in build-fuzz/ at the top of the tree; DEFAULT_TARGET when
# empty). Sets FUZZ (the binary), TARGET (its name), SECS (default 60), WORK
# (a temp dir, removed on exit) and CORPUS (WORK/corpus, for the seeds).
# Then call fuzz_regress on a folder of inputs that once failed, and
# fuzz_run with extra libFuzzer flags. Crashing inputs are kept in
# HBISS_FUZZ_ARTIFACTS (default: fuzz-artifacts/TARGET/ beside the binary).
set -euo pipefail
FUZZ_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FUZZ=${1:-$DEFAULT_TARGET}
SECS=${2:-60}
if [ ! -f "$FUZZ" ]; then
  TARGET=$FUZZ
  command -v clang++ >/dev/null || { echo "SKIP: clang++ is not installed"; exit 77; }
  cmake -S "$FUZZ_ROOT" -B "$FUZZ_ROOT/build-fuzz" -G Ninja -DCMAKE_C_COMPILER=clang \
    -DCMAKE_CXX_COMPILER=clang++ -DHBISS_FUZZ=ON >/dev/null
  ninja -C "$FUZZ_ROOT/build-fuzz" -j2 "$TARGET" >/dev/null
  FUZZ=$(find "$FUZZ_ROOT/build-fuzz" -type f -name "$TARGET" -perm -u+x | head -n 1)
fi
FUZZ=$(readlink -f "$FUZZ")
TARGET=$(basename "$FUZZ")
ARTIFACTS=${HBISS_FUZZ_ARTIFACTS:-$(dirname "$FUZZ")/fuzz-artifacts/$TARGET}
WORK=$(mktemp -d "/tmp/hbiss-$TARGET.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
CORPUS=$WORK/corpus
mkdir -p "$CORPUS" "$ARTIFACTS"

# fuzz_run [LIBFUZZER_FLAGS...]: fuzzes CORPUS for SECS seconds; the exit
# status is the fuzzer's (non-zero on a finding).
fuzz_run() {
  echo "fuzzing $FUZZ for $SECS s (crashing inputs go to $ARTIFACTS/)"
  "$FUZZ" -max_total_time="$SECS" -print_final_stats=1 -artifact_prefix="$ARTIFACTS/" "$@" \
    "$CORPUS" 2>&1 | tail -n 40
}

# fuzz_regress DIR: runs every input in DIR once (inputs that crashed the
# target before a fix, kept as regression tests); fails on the first that
# still fails.
fuzz_regress() {
  local f n=0
  for f in "$1"/*; do
    [ -f "$f" ] || continue
    n=$((n + 1))
    if ! "$FUZZ" -rss_limit_mb=2048 -timeout=60 "$f" >"$WORK/regress.log" 2>&1; then
      echo "FAIL: regression input $f still fails:"
      grep -E -A12 "ERROR|CHECK FAILED|runtime error" "$WORK/regress.log" | head -n 40
      return 1
    fi
  done
  echo "$n regression inputs in $1 pass"
}
