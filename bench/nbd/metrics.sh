#!/usr/bin/env bash
# The cost of metrics (issue 11): the NBD benchmark (run.sh: fio over one TCP
# connection, seven workloads) against hbiss serve without metrics and with
# --metrics-listen scraped every second, one run each; the table's last
# column is the ratio with/without. Writes results.md and results.json to OUT.
#
# Usage: bench/nbd/metrics.sh [HBISS_BINARY]
# Env:   RUNTIME (s per workload, default 5), SIZE (default 256M), OUT
#        (default bench/nbd/results-metrics), DIR (as run.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export RUNTIME=${RUNTIME:-5} SIZE=${SIZE:-256M} SERVERS="hbiss hbiss-metrics"
export OUT=${OUT:-$HERE/results-metrics}
exec "$HERE/run.sh" "$@"
