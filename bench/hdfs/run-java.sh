#!/usr/bin/env bash
# Runs the Java HDFS benchmark peer (bench/hdfs/java/HdfsBench.java) against the cluster in
# CLUSTER_DIR (scripts/hdfs-cluster), compiling it first if needed. Output: JSON lines, see
# HdfsBench.java.
#
# Usage: bench/hdfs/run-java.sh CLUSTER_DIR [HdfsBench options...]
#   e.g. bench/hdfs/run-java.sh /tmp/hc --mib 1024 --ops write,read,hflush
#   (--uri defaults to the cluster's own URI.)
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [[ $# -lt 1 ]]; then
  echo "usage: $0 CLUSTER_DIR [HdfsBench options...]" >&2
  exit 2
fi
cluster_dir=$1
shift
classes=$("$repo_root/bench/hdfs/build-java.sh")
cluster="$repo_root/scripts/hdfs-cluster"
cp=$("$cluster" classpath --dir "$cluster_dir")
uri=$("$cluster" uri --dir "$cluster_dir")
opens=()
for p in java.io java.lang java.lang.reflect java.math java.net java.nio java.text java.util \
    java.util.concurrent java.util.concurrent.atomic sun.nio.ch sun.net.dns sun.net.util; do
  opens+=("--add-opens=java.base/$p=ALL-UNNAMED")
done
exec java -XX:+IgnoreUnrecognizedVMOptions "${opens[@]}" -Xmx512m \
  "-Dlog4j.configuration=file:$cluster_dir/conf/log4j.properties" \
  -cp "$classes:$cp" HdfsBench --uri "$uri" "$@"
