#!/usr/bin/env bash
# `hbiss status` against a running server with a connected client (libnbd writer): what it
# serves, to whom, how it is doing, as text and --json, found through the store's records
# and with --server; and --log-format json: every line the server logged under that
# workload is one JSON object with time, level, logger and message. Then --log-level warn
# drops the info lines.
TEST_NAME=status
source "$(dirname "$0")/../nbd/lib.sh"
need python3
python3 -c 'import nbd' 2>/dev/null || skip "python3-libnbd is not installed"

hbiss create v1 -s 64M >/dev/null
hbiss create v2 -s 8M >/dev/null
PEER=$(free_port)
start_server --log-format json --metrics-listen 127.0.0.1:0 --peer-listen "127.0.0.1:$PEER"

python3 "$(dirname "$0")/writer.py" "$(uri v1)" 6 "$WORK/ready" >"$WORK/writer.log" 2>&1 &
WRITER=$!
EXTRA_CLEANUP="kill $WRITER 2>/dev/null"
for _ in $(seq 1 100); do [ -f "$WORK/ready" ] && break; sleep 0.1; done
[ -f "$WORK/ready" ] || fail "the writer did not connect"

# Found through the store's records (the server recorded itself opening v1).
check "hbiss status --json" hbiss status --json
cp "$WORK/check.out" "$WORK/status.json"
python3 - "$WORK/status.json" "$PORT" <<'PY' || fail "status --json content"
import json, sys
servers = json.load(open(sys.argv[1]))
assert isinstance(servers, list) and len(servers) == 1, servers
s = servers[0]
assert s["pid"] > 0 and s["uptime_seconds"] >= 0, s
assert s["nbd"] == "nbd://127.0.0.1:" + sys.argv[2], s["nbd"]
assert s["metrics"].startswith("127.0.0.1:"), s["metrics"]
conns = s["connections"]
assert len(conns) == 1, conns
c = conns[0]
assert c["export"] == "v1" and c["peer"].startswith("127.0.0.1:"), c
assert c["requests"] >= 2 and c["since"] > 0, c
vols = {v["name"]: v for v in s["volumes"]}
assert list(vols) == ["v1"], vols  # v2 is not open
v = vols["v1"]
assert v["size_bytes"] == 64 << 20 and v["owner"] is True and v["connections"] == 1, v
assert v["mapped_bytes"] > 0 and "unflushed_bytes" in v and "cleaner" in v, v
m = s["memory"]
assert m["limit_bytes"] >= m["write_buffers"]["capacity_bytes"] > 0, m
PY
CHECKS=$((CHECKS + 1))

check "hbiss status --server" hbiss status --server "127.0.0.1:$PEER"
grep -q "export v1, [0-9]* requests" "$WORK/check.out" || fail "status text lacks the connection"
grep -q "v1: 64.0 MiB" "$WORK/check.out" || fail "status text lacks the volume"

# Nobody at that address: a clear error, exit 1.
DEAD=$(free_port)
check_fails "status of a server that is not there" hbiss status --server "127.0.0.1:$DEAD"
grep -q "^hbiss: status: .*127.0.0.1:$DEAD" "$WORK/check.out" || fail "unclear error: $(cat "$WORK/check.out")"

wait "$WRITER" || fail "the writer failed: $(cat "$WORK/writer.log")"
CHECKS=$((CHECKS + 1))
stop_server

python3 - "$WORK/serve.log" <<'PY' || fail "a log line is not a JSON record"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) >= 6, lines
fields = set()
for n, line in enumerate(lines, 1):
    r = json.loads(line)
    assert isinstance(r, dict), (n, line)
    for k in ("time", "level", "logger", "message"):
        assert k in r, (n, k, line)
    assert r["level"] in ("trace", "debug", "info", "warning", "warn", "error", "critical"), r
    fields.update(r)
assert "connection" in fields and "volume" in fields, fields
PY
CHECKS=$((CHECKS + 1))

# --log-level warn: a connection's info lines are gone (so is the startup line
# start_server waits for: this server gets its port from free_port).
NPORT=$(free_port)
: >"$WORK/serve.log"
"$HBISS" --store "$STORE" serve --listen "127.0.0.1:$NPORT" --log-format json --log-level warn \
  >>"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
python3 - "$NPORT" "nbd://127.0.0.1:$NPORT/v2" <<'PY' || fail "no client could read v2's size"
import sys, time, nbd
for _ in range(100):
    try:
        h = nbd.NBD()
        h.connect_uri(sys.argv[2])
        break
    except nbd.Error:
        time.sleep(0.1)
assert h.get_size() == 8 << 20
h.shutdown()
PY
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || fail "hbiss serve --log-level warn did not exit 0"
SERVER_PID=""
! grep -q '"level":"info"' "$WORK/serve.log" || fail "--log-level warn still logs info lines"
CHECKS=$((CHECKS + 2))
log "PASS ($CHECKS checks)"
