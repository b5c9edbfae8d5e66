# Shared helpers for the HDFS interop tests (sourced, not run).
#
# Every check goes through pass/fail; finish prints the tally and exits non-zero on any failure.
# Exit code 77 means "skipped" to CTest (SKIP_RETURN_CODE); it is used only when the HDFS test
# environment is absent and HBISS_REQUIRE_HDFS is not 1.

SRC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER="$SRC_ROOT/scripts/hdfs-cluster"
GO_HDFS="${HBISS_GO_HDFS:-/usr/bin/hdfs}"  # Debian's hdfs-cli (colinmarc/hdfs), not Hadoop's.

n_pass=0
n_fail=0

say() { echo "[$(date +%H:%M:%S)] $*"; }
pass() { n_pass=$((n_pass + 1)); echo "  ok    $*"; }
fail() { n_fail=$((n_fail + 1)); echo "  FAIL  $*"; }

# Skips (exit 77), or fails when HBISS_REQUIRE_HDFS=1, because the test cannot run here.
unavailable() {
  if [[ "${HBISS_REQUIRE_HDFS:-0}" == "1" ]]; then
    echo "FAIL: $* (HBISS_REQUIRE_HDFS=1, so this is an error, not a skip)"
    exit 1
  fi
  echo "SKIP: $* (set HBISS_REQUIRE_HDFS=1 to make this a failure)"
  exit 77
}

finish() {
  echo "$(basename "$0" .sh): $n_pass passed, $n_fail failed"
  [[ $n_fail -eq 0 ]]
  exit $?
}

# same LABEL EXPECTED ACTUAL: byte-for-byte comparison of two local files.
same() {
  local label=$1 want=$2 got=$3
  if [[ ! -f "$got" ]]; then
    fail "$label: $got was not produced"
  elif cmp -s "$want" "$got"; then
    pass "$label ($(stat -c %s "$want") bytes)"
  else
    fail "$label: $got differs from $want ($(stat -c %s "$want") vs $(stat -c %s "$got") bytes;" \
      "$(cmp "$want" "$got" 2>&1 | head -n1))"
  fi
}

# run LABEL CMD...: runs CMD, a pass when it exits 0; its output goes to $work/last.out.
run() {
  local label=$1
  shift
  if "$@" > "$work/last.out" 2>&1; then
    pass "$label"
    return 0
  fi
  fail "$label: exit $? from: $*"
  sed 's/^/        /' "$work/last.out" | tail -n 20
  return 1
}

# Go CLI, pointed at the NameNode of an hdfs:// URI ($1); the rest are its arguments.
go_hdfs() {
  local uri=$1
  shift
  local nn=${uri#hdfs://}
  nn=${nn%%/*}
  HADOOP_NAMENODE="$nn" HADOOP_CONF_DIR= HADOOP_USER_NAME="${HADOOP_USER_NAME:-$(id -un)}" \
    "$GO_HDFS" "$@"
}

# make_file PATH SIZE: SIZE random bytes.
make_file() {
  head -c "$2" /dev/urandom > "$1"
}
