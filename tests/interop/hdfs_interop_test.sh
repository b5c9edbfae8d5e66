#!/usr/bin/env bash
# Interop against the live test cluster named by HBISS_HDFS_URI and HBISS_HDFS_CLUSTER_DIR
# (started by scripts/hdfs-cluster; see the README's test command).
#
# Parts, each announced on stdout as it runs:
#   cluster  scripts/hdfs-cluster's status/uri/env/datadir agree with the live cluster.
#   java-go  Files of sizes 0, 1, 511, 512, 513, blocksize, blocksize+1 and several blocks,
#            written by Java (`hdfs dfs -put`) and by the Go CLI (Debian's hdfs-cli), each read
#            back by both, byte for byte.
#   replica  A one-block file has exactly 3 replicas on the DataNodes' disks (found through
#            `hdfs-cluster env`); two replicas are corrupted there, and `hdfs dfs -cat` still
#            returns the right bytes. (The hbiss part does the same with a second file that
#            hbiss reads first.)
#   hbiss    Only when `hbiss dfs --help` exits 0 (the native client's CLI has landed): the same
#            sizes written by `hbiss dfs put` are read by Java and the Go CLI, files written by
#            them are read by `hbiss dfs cat` and `get`; `stat`, `ls`, `mkdir` and `rm` too.
#            When the command is missing this part is reported as NOT RUN, or fails when
#            HBISS_REQUIRE_HBISS_DFS=1.
#
# Usage: hdfs_interop_test.sh [PATH_TO_HBISS]
# Exit: 0 all checks passed, 1 a check failed, 77 skipped (no cluster, HBISS_REQUIRE_HDFS!=1).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

hbiss_bin=${1:-}

if [[ -z "${HBISS_HDFS_URI:-}" || -z "${HBISS_HDFS_CLUSTER_DIR:-}" ]]; then
  unavailable "HBISS_HDFS_URI and HBISS_HDFS_CLUSTER_DIR are not set (no live HDFS cluster)"
fi
[[ -x "$GO_HDFS" ]] || unavailable "the Go hdfs CLI ($GO_HDFS, Debian package hdfs-cli) is missing"

uri=${HBISS_HDFS_URI%/}
cdir=$HBISS_HDFS_CLUSTER_DIR
work=$(mktemp -d "${TMPDIR:-/tmp}/hbiss-interop.XXXXXX")
base="/hbiss-interop-$(date +%s)-$$"
trap 'go_hdfs "$uri" rm -r "$base" > /dev/null 2>&1; rm -rf "$work"' EXIT

dfs() { "$CLUSTER" dfs --dir "$cdir" "$@"; }

# ---- cluster
say "part cluster: scripts/hdfs-cluster against $uri ($cdir)"
if run "hdfs-cluster status exits 0" "$CLUSTER" status --dir "$cdir"; then
  cat "$work/last.out"
  live=$(grep -c '^dn.*running.*NameNode: live' "$work/last.out")
  if [[ $live -ge 3 ]]; then pass "$live DataNodes running and live"; else
    fail "only $live DataNodes running and live (replication 3 needs 3)"; fi
fi
got_uri=$("$CLUSTER" uri --dir "$cdir" 2> /dev/null)
if [[ "$got_uri" == "$uri" ]]; then pass "hdfs-cluster uri = $uri"; else
  fail "hdfs-cluster uri says '$got_uri', HBISS_HDFS_URI is '$uri'"; fi
if ! env_lines=$("$CLUSTER" env --dir "$cdir"); then
  fail "hdfs-cluster env failed"
  finish
fi
eval "$env_lines"
bs=${HBISS_HDFS_BLOCKSIZE:?}
n_dn=0
for n in 1 2 3 4 5 6 7 8 9; do
  var="HBISS_HDFS_DN${n}_DATA"
  [[ -n "${!var:-}" ]] || break
  n_dn=$n
  d=$("$CLUSTER" datadir --dir "$cdir" "$n")
  if [[ "$d" == "${!var}" && -d "$d/current" ]]; then pass "datadir $n = $d"; else
    fail "datadir $n: '$d' (env says '${!var}') has no current/ folder"; fi
done

# ---- test files
sizes=(0 1 511 512 513 "$bs" $((bs + 1)) $((3 * bs + 777)))
names=()
mkdir -p "$work/src"
for s in "${sizes[@]}"; do
  make_file "$work/src/f$s" "$s"
  names+=("f$s")
done
srcs=("${names[@]/#/$work/src/}")
# A one-block file written only by Java, for the replica part (other copies of the f* files
# are written by the Go CLI and hbiss, so their blocks are on disk more than 3 times).
one="$work/probe"
make_file "$one" "$bs"
two="$work/probe2"  # the same, for hbiss, so that no Java read has reported its bad replicas
make_file "$two" "$bs"

# ---- java <-> go
say "part java-go: hdfs dfs (FsShell) and the Go CLI, sizes ${sizes[*]}"
run "dfs -mkdir -p" dfs -mkdir -p "$uri$base/java" "$uri$base/go" "$uri$base/hbiss"
run "dfs -put (Java writes ${#names[@]} files)" dfs -put "${srcs[@]}" "$one" "$two" "$uri$base/java/"
run "dfs -get (Java reads them back)" dfs -get "$uri$base/java" "$work/java_by_java"
for f in "${names[@]}"; do
  same "Java -> Java $f" "$work/src/$f" "$work/java_by_java/$f"
  go_hdfs "$uri" cat "$base/java/$f" > "$work/$f.java_by_go" 2> "$work/go.err" ||
    fail "Go CLI cat $base/java/$f: $(head -n1 "$work/go.err")"
  same "Java -> Go   $f" "$work/src/$f" "$work/$f.java_by_go"
done
for f in "${names[@]}"; do
  run "Go CLI put $f" go_hdfs "$uri" put "$work/src/$f" "$base/go/$f"
  go_hdfs "$uri" cat "$base/go/$f" > "$work/$f.go_by_go" 2> "$work/go.err" ||
    fail "Go CLI cat $base/go/$f: $(head -n1 "$work/go.err")"
  same "Go -> Go     $f" "$work/src/$f" "$work/$f.go_by_go"
done
run "dfs -get (Java reads the Go files)" dfs -get "$uri$base/go" "$work/go_by_java"
for f in "${names[@]}"; do
  same "Go -> Java   $f" "$work/src/$f" "$work/go_by_java/$f"
done

# ---- replicas on disk, and corrupted ones
# corrupt_two LOCAL: finds the on-disk replicas of the one-block file whose content is LOCAL,
# checks there are exactly 3, and flips one byte in the middle of two of them (their .meta
# checksums stay as they were), so a reader meets a bad replica first 2 times in 3.
corrupt_two() {
  local want=$1 replicas=() n var blk victim
  for n in $(seq 1 "$n_dn"); do
    var="HBISS_HDFS_DN${n}_DATA"
    while IFS= read -r -d '' blk; do
      cmp -s "$blk" "$want" && replicas+=("$blk")
    done < <(find "${!var}" -type f -name 'blk_*' ! -name '*.meta' -size "${bs}c" -print0)
  done
  if [[ ${#replicas[@]} -eq 3 ]]; then
    pass "$(basename "$want") has 3 replicas on disk"
  else
    fail "$(basename "$want") has ${#replicas[@]} replicas on disk, expected 3"
    return 1
  fi
  for victim in "${replicas[0]}" "${replicas[1]}"; do
    python3 - "$victim" "$((bs / 2))" << 'EOF'
import sys
path, off = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(off)
    b = f.read(1)
    f.seek(off)
    f.write(bytes([b[0] ^ 0xFF]))
EOF
    if cmp -s "$victim" "$want"; then fail "corrupting $victim did not change it"; else
      pass "corrupted replica $victim"; fi
  done
}

say "part replica: block files on the DataNodes' disks"
if corrupt_two "$one"; then
  dfs -cat "$uri$base/java/probe" > "$work/corrupt_read" 2> "$work/corrupt_read.err"
  same "Java read with 2 of 3 replicas corrupt" "$one" "$work/corrupt_read"
  if grep -q -i 'checksum' "$work/corrupt_read.err"; then
    echo "  (the Java client hit a corrupt replica and failed over)"
  fi
fi

# ---- hbiss
if [[ -n "$hbiss_bin" && -x "$hbiss_bin" ]] && "$hbiss_bin" dfs --help > /dev/null 2>&1; then
  say "part hbiss: $hbiss_bin dfs against Java and the Go CLI"
  h() { "$hbiss_bin" dfs "$@"; }
  run "hbiss dfs mkdir" h mkdir "$uri$base/hbiss/sub"
  for f in "${names[@]}"; do
    run "hbiss dfs put $f" h put "$work/src/$f" "$uri$base/hbiss/$f"
  done
  run "dfs -get (Java reads the hbiss files)" dfs -get "$uri$base/hbiss" "$work/hbiss_by_java"
  for f in "${names[@]}"; do
    same "hbiss -> Java $f" "$work/src/$f" "$work/hbiss_by_java/$f"
    go_hdfs "$uri" cat "$base/hbiss/$f" > "$work/$f.hbiss_by_go" 2> "$work/go.err" ||
      fail "Go CLI cat $base/hbiss/$f: $(head -n1 "$work/go.err")"
    same "hbiss -> Go   $f" "$work/src/$f" "$work/$f.hbiss_by_go"
    h cat "$uri$base/java/$f" > "$work/$f.java_by_hbiss" 2> "$work/h.err" ||
      fail "hbiss dfs cat $base/java/$f: $(head -n1 "$work/h.err")"
    same "Java -> hbiss $f (cat)" "$work/src/$f" "$work/$f.java_by_hbiss"
    rm -f "$work/$f.go_by_hbiss"
    h get "$uri$base/go/$f" "$work/$f.go_by_hbiss" > /dev/null 2> "$work/h.err" ||
      fail "hbiss dfs get $base/go/$f: $(head -n1 "$work/h.err")"
    same "Go -> hbiss   $f (get)" "$work/src/$f" "$work/$f.go_by_hbiss"
    if h stat "$uri$base/hbiss/$f" > "$work/stat.out" 2>&1 &&
        grep -qw -- "${f#f}" "$work/stat.out"; then
      pass "hbiss dfs stat $f shows its length ${f#f}"
    else
      fail "hbiss dfs stat $f: no length ${f#f} in: $(head -c 300 "$work/stat.out")"
    fi
  done
  # Corrupted replicas must not reach hbiss either: probe2 gets 2 of its 3 replicas
  # corrupted now, and hbiss is the first to read it (three times; each read may choose
  # another replica first).
  if corrupt_two "$two"; then
    for i in 1 2 3; do
      h cat "$uri$base/java/probe2" > "$work/corrupt_by_hbiss$i" 2> "$work/h.err" ||
        fail "hbiss dfs cat $i with corrupt replicas: $(head -n1 "$work/h.err")"
      same "hbiss read $i with 2 of 3 replicas corrupt" "$two" "$work/corrupt_by_hbiss$i"
    done
  fi
  if run "hbiss dfs ls" h ls "$uri$base/hbiss"; then
    missing=""
    for f in "${names[@]}" sub; do grep -qw -- "$f" "$work/last.out" || missing+=" $f"; done
    if [[ -z "$missing" ]]; then pass "hbiss dfs ls lists every entry"; else
      fail "hbiss dfs ls misses:$missing"; fi
  fi
  run "hbiss dfs rm" h rm "$uri$base/hbiss/f1"
  if go_hdfs "$uri" ls "$base/hbiss/f1" > /dev/null 2>&1; then
    fail "after hbiss dfs rm, the Go CLI still sees $base/hbiss/f1"
  else
    pass "after hbiss dfs rm the file is gone for the Go CLI"
  fi
  if h cat "$uri$base/hbiss/no-such-file" > /dev/null 2>&1; then
    fail "hbiss dfs cat of a missing file exited 0"
  else
    pass "hbiss dfs cat of a missing file fails"
  fi
  say "parts run: cluster, java-go, replica, hbiss"
elif [[ "${HBISS_REQUIRE_HBISS_DFS:-0}" == "1" ]]; then
  fail "part hbiss: ${hbiss_bin:-no hbiss binary given} has no working 'dfs' command" \
    "(HBISS_REQUIRE_HBISS_DFS=1)"
else
  say "part hbiss: NOT RUN (${hbiss_bin:-no hbiss binary given} has no working 'dfs' command yet)"
  say "parts run: cluster, java-go, replica"
fi

finish
