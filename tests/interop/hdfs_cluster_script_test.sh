#!/usr/bin/env bash
# Tests scripts/hdfs-cluster's disruptive commands on a private cluster of its own (3
# DataNodes, random free ports, a temporary directory), so the shared test cluster is never
# disturbed: start, status, kill-dn + wait-live (the NameNode notices), reads with a DataNode
# down, restart-dn, restart-nn (SIGTERM and -9) with Java and Go clients reconnecting, datadir,
# stop (no process left), and clear errors for bad use.
#
# Needs Java 17+ and the jars from scripts/install-hadoop.sh.
# Exit: 0 all checks passed, 1 a check failed, 77 skipped (no jars, HBISS_REQUIRE_HDFS!=1).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

lib="${HBISS_HADOOP_LIB:-$SRC_ROOT/hadoop/target/lib}"
compgen -G "$lib/hadoop-hdfs-[0-9]*.jar" > /dev/null ||
  unavailable "no Hadoop jars in $lib (run scripts/install-hadoop.sh)"
command -v java > /dev/null || unavailable "no java on PATH (run scripts/install-hadoop.sh)"

work=$(mktemp -d "${TMPDIR:-/tmp}/hbiss-cluster-test.XXXXXX")
cdir="$work/cluster"
cleanup() {
  "$CLUSTER" stop --dir "$cdir" > /dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

our_processes() { pgrep -f -- "-Dhbiss.cluster.dir=$cdir( |$)" | wc -l; }
dfs() { "$CLUSTER" dfs --dir "$cdir" "$@"; }

# ---- start, on free ports
say "start: a private cluster with 3 DataNodes"
uri=""
for attempt in 1 2 3 4 5; do
  port=$((20000 + (RANDOM % 120) * 100))  # below the ephemeral range (32768+)
  t0=$(date +%s%N)
  if "$CLUSTER" start --dir "$cdir" --base-port "$port" --datanodes 3 > "$work/start.out" \
      2> "$work/start.err"; then
    uri=$(tail -n1 "$work/start.out")
    break
  fi
  grep -q 'ports already in use' "$work/start.err" || break
done
if [[ "$uri" != "hdfs://127.0.0.1:$port" ]]; then
  fail "start: last stdout line '$uri', want hdfs://127.0.0.1:$port"
  sed 's/^/        /' "$work/start.err" | tail -n 40
  finish
fi
ms=$((($(date +%s%N) - t0) / 1000000))
pass "start printed $uri in $((ms / 1000)).$((ms % 1000 / 100)) s"
[[ $(our_processes) -eq 4 ]] && pass "4 JVMs run (1 NameNode, 3 DataNodes)" ||
  fail "$(our_processes) JVMs run, want 4"
if run "status exits 0" "$CLUSTER" status --dir "$cdir"; then
  n=$(grep -c '^dn.*running.*NameNode: live' "$work/last.out")
  [[ $n -eq 3 ]] && pass "status: 3 DataNodes live" || fail "status: $n DataNodes live, want 3"
fi

# ---- data to read through the failures
make_file "$work/data" $((2 * 1048576 + 4321))
run "dfs -put" dfs -put "$work/data" "$uri/data"

# ---- datadir
d1=$("$CLUSTER" datadir --dir "$cdir" 1)
if [[ -n $(find "$d1" -name 'blk_*' ! -name '*.meta' 2> /dev/null | head -n1) ]]; then
  pass "datadir 1 ($d1) holds block files"
else
  fail "datadir 1 ($d1) holds no block files"
fi

# ---- kill-dn: the process goes, the NameNode notices, reads still work
say "kill-dn 1"
run "kill-dn 1" "$CLUSTER" kill-dn --dir "$cdir" 1
if pgrep -f -- "-Dhbiss.cluster.dir=$cdir -Dhbiss.role=dn1( |$)" > /dev/null; then
  fail "DataNode 1 still runs after kill-dn"
else
  pass "DataNode 1 is gone"
fi
run "the NameNode counts 2 live DataNodes within 60 s" \
  "$CLUSTER" wait-live --dir "$cdir" 2 --timeout 60
"$CLUSTER" status --dir "$cdir" > "$work/status" 2>&1
grep -q '^dn1 .*stopped, NameNode: dead' "$work/status" && pass "status: dn1 stopped and dead" ||
  fail "status after kill-dn: $(grep '^dn1' "$work/status")"
dfs -cat "$uri/data" > "$work/read1" 2> /dev/null
same "Java read with DataNode 1 down" "$work/data" "$work/read1"
go_hdfs "$uri" cat /data > "$work/read2" 2> /dev/null
same "Go read with DataNode 1 down" "$work/data" "$work/read2"

# ---- restart-dn
say "restart-dn 1"
run "restart-dn 1" "$CLUSTER" restart-dn --dir "$cdir" 1
run "the NameNode counts 3 live DataNodes" "$CLUSTER" wait-live --dir "$cdir" 3 --timeout 30
run "restart-dn of a running DataNode (2)" "$CLUSTER" restart-dn --dir "$cdir" 2

# ---- restart-nn, -9 and SIGTERM; clients reconnect
say "restart-nn --kill"
run "restart-nn --kill" "$CLUSTER" restart-nn --dir "$cdir" --kill
go_hdfs "$uri" cat /data > "$work/read3" 2> /dev/null
same "Go read after the NameNode was killed and restarted" "$work/data" "$work/read3"
run "Go put after the NameNode restart" go_hdfs "$uri" put "$work/data" /data2
say "restart-nn"
run "restart-nn (SIGTERM)" "$CLUSTER" restart-nn --dir "$cdir"
dfs -cat "$uri/data2" > "$work/read4" 2> /dev/null
same "Java read of a file written before the NameNode restart" "$work/data" "$work/read4"
[[ $(our_processes) -eq 4 ]] && pass "still 4 JVMs" || fail "$(our_processes) JVMs, want 4"

# ---- bad use gets clear errors, and changes nothing
say "bad use"
"$CLUSTER" kill-dn --dir "$cdir" 7 > /dev/null 2> "$work/err" && fail "kill-dn 7 exited 0" ||
  { grep -q 'out of range' "$work/err" && pass "kill-dn 7: $(cat "$work/err")" ||
    fail "kill-dn 7 said: $(cat "$work/err")"; }
mkdir -p "$work/foreign" && touch "$work/foreign/keep"
"$CLUSTER" start --dir "$work/foreign" --base-port "$((port + 50))" > /dev/null 2> "$work/err" &&
  fail "start in a foreign non-empty dir exited 0" ||
  { [[ -f "$work/foreign/keep" ]] && grep -q 'refusing' "$work/err" &&
    pass "start refuses a foreign dir: $(cat "$work/err")" ||
    fail "start in a foreign dir: $(cat "$work/err")"; }
"$CLUSTER" start --dir "$work/second" --base-port "$port" > /dev/null 2> "$work/err" &&
  fail "a second cluster on the same ports exited 0" ||
  { grep -q 'ports already in use' "$work/err" && pass "start on busy ports fails clearly" ||
    fail "start on busy ports said: $(head -n3 "$work/err")"; }
"$CLUSTER" status --dir "$work/nowhere" > /dev/null 2> "$work/err" &&
  fail "status of no cluster exited 0" || pass "status of no cluster fails: $(cat "$work/err")"

# ---- stop
say "stop"
run "stop" "$CLUSTER" stop --dir "$cdir"
[[ $(our_processes) -eq 0 ]] && pass "no process left after stop" ||
  fail "$(our_processes) processes left after stop"
"$CLUSTER" status --dir "$cdir" > /dev/null 2>&1 && fail "status exits 0 after stop" ||
  pass "status exits non-zero after stop"

finish
