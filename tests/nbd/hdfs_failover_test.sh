#!/usr/bin/env bash
# Host failover on the real HDFS cluster: a volume in HDFS is served by one
# `hbiss serve` ("host A"), written through qemu-io and flushed, then A is
# killed with SIGKILL. Its HDFS leases (the volume lock, the open segment)
# outlive it until the NameNode's soft limit, so:
#   - a second server ("host B") without --break-lock refuses the volume
#     (the client gets an error, the server logs that the volume is open);
#   - B with --break-lock takes it over now (the log shows the break), every
#     byte flushed on A reads back, and B's own writes land;
#   - after B stops cleanly, a plain server opens the volume with no break and
#     sees A's and B's data; Java's `hdfs dfs` lists the volume's objects.
# Needs HBISS_HDFS_URI (and HBISS_HDFS_CLUSTER_DIR for `hdfs dfs`); skipped
# without them unless HBISS_REQUIRE_HDFS=1.
TEST_NAME=hdfs_failover
source "$(dirname "$0")/lib.sh"
need qemu-io
if [ -z "${HBISS_HDFS_URI:-}" ]; then
  [ "${HBISS_REQUIRE_HDFS:-0}" = 1 ] && fail "HBISS_REQUIRE_HDFS=1 but HBISS_HDFS_URI is not set"
  skip "HBISS_HDFS_URI is not set (no live HDFS cluster)"
fi
HDFS_DIR="/hbiss-failover-$(date +%s)-$$"
STORE="${HBISS_HDFS_URI%/}$HDFS_DIR"
EXTRA_CLEANUP='"$HBISS" dfs rm -r -f "$STORE" >/dev/null 2>&1'
"$HBISS" dfs mkdir "$STORE" >/dev/null || fail "cannot create $STORE"

io() { qemu-io -f raw "$@"; }

check "create a 64 MiB volume in HDFS" hbiss create vm -s 64M

# --- host A: write, flush, more writes, kill -9 ------------------------------
start_server
check "A: pattern 0xa1 over [0, 4M), flushed" \
  io -c "write -P 0xa1 0 4M" -c "flush" "$(uri vm)"
check "A: pattern 0xa2 over [4M, 5M) with FUA" io -c "write -f -P 0xa2 4M 1M" "$(uri vm)"
check "A: reads back before the kill" io -c "read -P 0xa1 0 4M" -c "read -P 0xa2 4M 1M" "$(uri vm)"
kill9_server
killed_at=$(date +%s)
log "host A killed with SIGKILL"

# --- host B without --break-lock: refused -----------------------------------
start_server
check_fails "B without --break-lock: the export is refused" \
  io -c "read -P 0xa1 0 4K" "$(uri vm)"
grep -q "already open for writing" "$WORK/serve.log" ||
  fail "B's log does not say why the volume was refused"
CHECKS=$((CHECKS + 1))
stop_server

# --- host B with --break-lock: takes over -----------------------------------
start_server --break-lock
check "B --break-lock: A's flushed data reads back" \
  io -c "read -P 0xa1 0 4M" -c "read -P 0xa2 4M 1M" "$(uri vm)"
took=$(( $(date +%s) - killed_at ))
grep -q "breaking it to take the volume over" "$WORK/serve.log" ||
  fail "B opened the volume without breaking the lock (took ${took}s after the kill)"
CHECKS=$((CHECKS + 1))
log "B took the volume over ${took}s after A was killed"
check "B: pattern 0xb1 over [8M, 10M), flushed" \
  io -c "write -P 0xb1 8M 2M" -c "flush" "$(uri vm)"
check "B: discard [1M, 2M)" io -c "discard 1M 1M" -c "flush" "$(uri vm)"
stop_server

# --- a plain server afterwards: no break needed, everything there -----------
start_server
check "C: A's and B's data, the discard reads as zeros" \
  io -c "read -P 0xa1 0 1M" -c "read -P 0 1M 1M" -c "read -P 0xa1 2M 2M" \
     -c "read -P 0xa2 4M 1M" -c "read -P 0 5M 3M" -c "read -P 0xb1 8M 2M" "$(uri vm)"
if grep -q "breaking it" "$WORK/serve.log"; then fail "C broke a lock that B had released"; fi
stop_server

if [ -n "${HBISS_HDFS_CLUSTER_DIR:-}" ]; then
  CLUSTER="$(dirname "$0")/../../scripts/hdfs-cluster"
  check "hdfs dfs lists the volume's segments" \
    "$CLUSTER" dfs --dir "$HBISS_HDFS_CLUSTER_DIR" -ls -R "$HDFS_DIR/volumes/vm/epoch"
  grep -q "$HDFS_DIR/volumes/vm/epoch/[0-9a-f]*/seg/" "$WORK/check.out" ||
    fail "no segment listed by hdfs dfs"
fi
finish
