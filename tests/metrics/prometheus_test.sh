#!/usr/bin/env bash
# hbiss serve --metrics-listen under a real client: the exposition passes the real
# `promtool check metrics` with no warning, and a real Prometheus server scraping it every
# second sees the volume's write counter grow and the target up.
TEST_NAME=prometheus
source "$(dirname "$0")/../nbd/lib.sh"
need promtool prometheus curl python3
python3 -c 'import nbd' 2>/dev/null || skip "python3-libnbd is not installed"

hbiss create v1 -s 64M >/dev/null
start_server --metrics-listen 127.0.0.1:0
MPORT=$(grep -o 'metrics on http://127.0.0.1:[0-9]*' "$WORK/serve.log" | sed 's/.*://')
[ -n "$MPORT" ] || fail "no metrics address logged"

# A writer that stays connected for the whole test.
python3 "$(dirname "$0")/writer.py" "$(uri v1)" 15 "$WORK/ready" >"$WORK/writer.log" 2>&1 &
WRITER=$!
EXTRA_CLEANUP="kill $WRITER 2>/dev/null"
for _ in $(seq 1 100); do [ -f "$WORK/ready" ] && break; sleep 0.1; done
[ -f "$WORK/ready" ] || fail "the writer did not connect"

check "scrape /metrics" curl -sf "http://127.0.0.1:$MPORT/metrics" -o "$WORK/metrics.txt"
grep -q '^hbiss_nbd_requests_total{volume="v1",command="write"} [1-9]' "$WORK/metrics.txt" ||
  fail "no write counter for v1 in the exposition"
grep -q '^hbiss_nbd_request_duration_seconds_bucket{volume="v1",command="flush",le="+Inf"} [1-9]' \
  "$WORK/metrics.txt" || fail "no flush latency histogram for v1"
grep -q '^hbiss_volume_size_bytes{volume="v1"} 67108864$' "$WORK/metrics.txt" ||
  fail "no size gauge for v1"
grep -q '^hbiss_nbd_connections_open 1$' "$WORK/metrics.txt" || fail "connections_open is not 1"
# promtool prints every lint problem and exits nonzero on one: nothing may be printed.
if ! promtool check metrics <"$WORK/metrics.txt" >"$WORK/promtool.out" 2>&1 ||
   [ -s "$WORK/promtool.out" ]; then
  cat "$WORK/promtool.out" >&2
  fail "promtool check metrics found problems"
fi
CHECKS=$((CHECKS + 1))

# A real Prometheus scraping every second.
PPORT=$(free_port)
cat >"$WORK/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: hbiss
    static_configs:
      - targets: ["127.0.0.1:$MPORT"]
YML
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PPORT" >"$WORK/prometheus.log" 2>&1 &
PROM=$!
EXTRA_CLEANUP="kill $WRITER $PROM 2>/dev/null"

# query EXPR: prints the first result's value, or nothing.
query() {
  curl -sf --get "http://127.0.0.1:$PPORT/api/v1/query" --data-urlencode "query=$1" |
    python3 -c 'import json,sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if r else "")' 2>/dev/null || true
}
WRITES=""
UP=""
for _ in $(seq 1 40); do
  WRITES=$(query 'hbiss_nbd_requests_total{volume="v1",command="write"}')
  UP=$(query 'up{job="hbiss"}')
  if [ -n "$WRITES" ] && [ "$UP" = 1 ]; then break; fi
  sleep 0.5
done
[ "$UP" = 1 ] || { tail -20 "$WORK/prometheus.log" >&2; fail "Prometheus does not see the target up (up='$UP')"; }
python3 -c "import sys; sys.exit(0 if float('$WRITES') > 0 else 1)" ||
  fail "Prometheus's write counter for v1 is '$WRITES', not > 0"
CHECKS=$((CHECKS + 2))
log "Prometheus sees $WRITES writes to v1, target up"

kill "$PROM" 2>/dev/null || true
wait "$PROM" 2>/dev/null || true
wait "$WRITER" || fail "the writer failed: $(cat "$WORK/writer.log")"
CHECKS=$((CHECKS + 1))
# Once its last connection is gone the volume closes and its series go.
sleep 0.5
curl -sf "http://127.0.0.1:$MPORT/metrics" -o "$WORK/after.txt" || fail "scrape after close"
! grep -q 'volume="v1"' "$WORK/after.txt" || fail "v1's series outlive its close"
CHECKS=$((CHECKS + 1))
finish
