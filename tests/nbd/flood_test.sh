#!/usr/bin/env bash
# Limits under a connection flood (issue 11): a server with small limits
# (64 connections, 4 per export, a 3 s handshake timeout, --memory-limit
# 128M) serves a verifying fio writer on one export while flood_client.py
# opens full handshakes beyond the per-export limit and 300 half-open TCP
# connections (silent, or half a handshake). The writer must see no error and
# its crc32c verify must pass; the flood must be refused by the limits (the
# clients see the reasons, the log counts them) and the half-open
# connections dropped after the handshake timeout; the server's peak RSS
# must stay within its idle RSS plus the memory limit (not checked under
# ASan, HBISS_SANITIZED=1, as memory_limit_test.sh).
TEST_NAME=flood
source "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
need fio python3
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio has no nbd engine"
python3 -c 'import nbd' 2>/dev/null || skip "python3 nbd (libnbd) is not installed"
LIMIT_MB=128
PER_EXPORT=4
HANDSHAKE_S=3
HALF_OPEN=${HBISS_FLOOD_HALF_OPEN:-300}

hbiss create vm -s 256M >/dev/null
hbiss create other -s 16M >/dev/null
start_server --memory-limit ${LIMIT_MB}M --max-connections 64 \
  --max-connections-per-export $PER_EXPORT --handshake-timeout $HANDSHAKE_S --workers 4
grep -q "at most 64 connections, $PER_EXPORT per export" "$WORK/serve.log" ||
  fail "the limits are not logged at startup"
status() { awk -v f="$1:" '$1 == f { print $2 * 1024 }' "/proc/$SERVER_PID/status"; }
idle=$(status VmRSS)
[ -n "$idle" ] || fail "no VmRSS for the server"
bound=$((idle + LIMIT_MB * 1048576))

# Rate-limited so that it writes through the whole flood (about 8 s).
fio --name=w --ioengine=nbd --uri="$(uri vm)" --rw=randwrite --bs=16k --iodepth=16 \
  --size=96M --rate=12m --verify=crc32c --verify_fatal=1 --do_verify=1 --randseed=7 \
  --output-format=json >"$WORK/fio.json" 2>"$WORK/fio.err" &
FIO=$!
EXTRA_CLEANUP='kill $FIO 2>/dev/null'
# fio connects twice: once to read the size, then for the job.
for _ in $(seq 1 100); do
  [ "$(grep -c "export 'vm'" "$WORK/serve.log")" -ge 2 ] && break
  sleep 0.1
done
[ "$(grep -c "export 'vm'" "$WORK/serve.log")" -ge 2 ] || fail "fio did not connect"

if ! python3 "$HERE/flood_client.py" 127.0.0.1 "$PORT" vm other $PER_EXPORT $HANDSHAKE_S \
    "$HALF_OPEN" 64 >"$WORK/flood.json" 2>"$WORK/flood.err"; then
  cat "$WORK/flood.json" "$WORK/flood.err" >&2
  fail "the flood saw the limits misbehave"
fi
log "flood: $(cat "$WORK/flood.json")"
CHECKS=$((CHECKS + 1))
kill -0 $FIO 2>/dev/null || fail "fio was done before the flood ended: nothing ran alongside it"

rc=0
wait $FIO || rc=$?
EXTRA_CLEANUP=
[ "$rc" = 0 ] || { cat "$WORK/fio.err" >&2; fail "fio exited with $rc"; }
python3 - "$WORK/fio.json" <<'PY' || fail "fio results"
import json, sys
text = open(sys.argv[1]).read()
job = json.loads(text[text.index("{"):])["jobs"][0]
assert job["error"] == 0, job["error"]
assert job["write"]["io_bytes"] == 96 << 20, job["write"]["io_bytes"]
assert job["read"]["io_bytes"] == 96 << 20, job["read"]["io_bytes"]  # the verify pass
PY
CHECKS=$((CHECKS + 1))

# The log names every refusal at info level, with its reason.
per_export=$(grep -c "refused option NBD_OPT_GO.*already has" "$WORK/serve.log" || true)
server_wide=$(grep -c "refused: the server has 64 connections" "$WORK/serve.log" || true)
timeouts=$(grep -c "handshake not finished within" "$WORK/serve.log" || true)
log "log: $per_export per-export refusals, $server_wide server-wide, $timeouts handshake timeouts"
[ "$per_export" -ge 4 ] || fail "only $per_export per-export refusals logged"
[ "$server_wide" -ge 1 ] || fail "no server-wide refusal logged"
[ "$timeouts" -ge 1 ] || fail "no handshake timeout logged"
CHECKS=$((CHECKS + 3))

hwm=$(status VmHWM)
log "idle RSS $((idle / 1048576)) MiB, peak (VmHWM) $((hwm / 1048576)) MiB, bound" \
    "$((bound / 1048576)) MiB"
if [ "${HBISS_SANITIZED:-0}" = 1 ]; then
  log "sanitizer build: the RSS bound is not checked"
else
  [ "$hwm" -le "$bound" ] || fail "peak RSS $hwm bytes is over the bound $bound"
  CHECKS=$((CHECKS + 1))
fi
finish
