#!/usr/bin/env bash
# Compiles bench/hdfs/java/*.java against the Hadoop jars (scripts/install-hadoop.sh) into
# OUT_DIR (default hadoop/target/bench-classes, which git ignores). Skips the compile when the
# classes are newer than every source. Prints OUT_DIR on stdout.
#
# Usage: bench/hdfs/build-java.sh [OUT_DIR]
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
src_dir="$repo_root/bench/hdfs/java"
out="${1:-$repo_root/hadoop/target/bench-classes}"
lib="${HBISS_HADOOP_LIB:-$repo_root/hadoop/target/lib}"

if ! compgen -G "$lib/hadoop-common-[0-9]*.jar" > /dev/null; then
  echo "build-java: no Hadoop jars in $lib; run scripts/install-hadoop.sh first" >&2
  exit 1
fi
if ! command -v javac > /dev/null; then
  echo "build-java: no javac on PATH; run scripts/install-hadoop.sh first" >&2
  exit 1
fi

stamp="$out/.built"
if [[ -f "$stamp" && -z $(find "$src_dir" -name '*.java' -newer "$stamp") ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
javac -nowarn -encoding UTF-8 --release 17 -cp "$lib/*" -d "$out" "$src_dir"/*.java
touch "$stamp"
echo "build-java: compiled into $out" >&2
echo "$out"
