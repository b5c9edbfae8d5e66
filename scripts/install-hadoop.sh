#!/usr/bin/env bash
# Installs what scripts/hdfs-cluster and bench/hdfs need: a Java 17+ runtime (and javac), Maven,
# and the Hadoop 3.5 jars listed in hadoop/pom.xml, copied into hadoop/target/lib.
#
# Idempotent: the jar folder is refetched only when hadoop/pom.xml changed since the last
# successful run (its sha256 is kept in hadoop/target/lib/.pom-sha256) or the folder is empty.
# Repositories come from the machine's Maven settings; no host name is named here.
#
# Usage: scripts/install-hadoop.sh [--force]
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pom="$repo_root/hadoop/pom.xml"
lib="$repo_root/hadoop/target/lib"
stamp="$lib/.pom-sha256"
force=0
[[ "${1:-}" == "--force" ]] && force=1

log() { echo "install-hadoop: $*" >&2; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [[ $apt_updated -eq 0 ]]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@"
}

# Major version of the java on PATH, or 0 when there is none.
java_major() {
  local v
  v=$(java -version 2>&1 | sed -n 's/.* version "\([0-9][0-9]*\).*/\1/p' | head -n1) || true
  echo "${v:-0}"
}

if [[ $(java_major) -lt 17 ]] || ! command -v javac > /dev/null; then
  # The JDK (not only the JRE) because bench/hdfs/build-java.sh compiles against the jars.
  log "installing OpenJDK 17 (java $(java_major) found)"
  apt_install openjdk-17-jdk-headless
fi
if [[ $(java_major) -lt 17 ]]; then
  log "error: java on PATH is still older than 17 after the install; fix PATH or update-alternatives"
  exit 1
fi
if ! command -v mvn > /dev/null; then
  log "installing Maven"
  apt_install maven
fi

want=$(sha256sum "$pom" | cut -d' ' -f1)
if [[ $force -eq 0 && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
    && compgen -G "$lib/hadoop-hdfs-[0-9]*.jar" > /dev/null; then
  log "jars already in $lib"
  exit 0
fi

log "fetching Hadoop jars into $lib"
rm -rf "$lib"
# Retried once: a registry hiccup should not fail a whole CI run. Maven's output goes to a log
# that is shown only on failure.
mkdir -p "$repo_root/hadoop/target"
mvn_log="$repo_root/hadoop/target/mvn.log"
for attempt in 1 2; do
  if mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
      -DoutputDirectory="$lib" -DincludeScope=runtime > "$mvn_log" 2>&1; then
    break
  fi
  if [[ $attempt -eq 2 ]]; then
    tail -n 40 "$mvn_log" >&2
    log "error: mvn dependency:copy-dependencies failed (full log: $mvn_log)"
    exit 1
  fi
  log "mvn failed; retrying in 5 s"
  sleep 5
done
for jar in hadoop-hdfs hadoop-common hadoop-hdfs-client; do
  if ! compgen -G "$lib/$jar-[0-9]*.jar" > /dev/null; then
    log "error: $jar missing from $lib after mvn"
    exit 1
  fi
done
echo "$want" > "$stamp"
log "$(ls "$lib"/*.jar | wc -l) jars in $lib"
