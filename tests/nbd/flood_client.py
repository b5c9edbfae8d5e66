# The flood of flood_test.sh. Usage: python3 flood_client.py HOST PORT EXPORT OTHER
# PER_EXPORT HANDSHAKE_S HALF_OPEN MAX_CONNECTIONS
#
# 1. Full handshakes (libnbd) to EXPORT, more than PER_EXPORT allows (one
#    slot is the fio writer's): the ones beyond it must be refused with the
#    per-export message; those admitted stay connected through step 2.
# 2. HALF_OPEN raw TCP connections: half send nothing, half send the client
#    flags and half an option header. Once MAX_CONNECTIONS of them are held,
#    one more full handshake must be refused by the server-wide limit
#    (NBD_REP_ERR_POLICY). Every half-open
#    connection must then be closed by the server within HANDSHAKE_S plus
#    slack (those over the limit are refused sooner, or closed at once).
# 3. Once they are gone, a full handshake to OTHER succeeds.
# Prints one JSON line of counts; exit 0 if every expectation held, else 1.
import json
import selectors
import socket
import struct
import sys
import time

import nbd

host, port, export, other = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
per_export, handshake_s, half_open = int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
max_connections = int(sys.argv[8])
failures = []
counts = {}


def uri(name):
    return "nbd://%s:%d/%s" % (host, port, name)


def try_connect(name):
    """Returns (handle, None) or (None, the error text)."""
    h = nbd.NBD()
    try:
        h.connect_uri(uri(name))
        return h, None
    except nbd.Error as e:
        return None, str(e)


# 1. Per-export limit.
held, refused_per_export, other_errors = [], 0, []
for _ in range(per_export + 4):
    h, err = try_connect(export)
    if h is not None:
        held.append(h)
    elif "policy" in err or "already has" in err:  # libnbd names the error only
        refused_per_export += 1
    else:
        other_errors.append(err)
counts["admitted"] = len(held)
counts["refused_per_export"] = refused_per_export
if len(held) > per_export - 1:
    failures.append("%d connections admitted beside the writer, limit %d" % (len(held), per_export))
if refused_per_export < 4:
    failures.append("only %d per-export refusals: %s" % (refused_per_export, other_errors[:3]))

# 2. Half-open connections.
MAGIC = struct.pack(">Q", 0x49484156454F5054)  # IHAVEOPT
socks = []
start = time.monotonic()


def open_half(i):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect((host, port))
    except OSError as e:
        failures.append("connect %d: %s" % (i, e))
        s.close()
        return
    if i % 2 == 1:
        s.sendall(struct.pack(">I", 3) + MAGIC)  # flags, then half an option header
    s.setblocking(False)
    socks.append(s)


# Enough to fill every connection slot; then a full handshake must be refused
# with the reason (a refusal slot is free); then the rest of the flood, which
# also fills the refusal slots (connections beyond are closed at once).
first = min(max_connections + 2, half_open)  # full even if other clients leave
for i in range(first):
    open_half(i)
time.sleep(0.2)
h, err = try_connect(other)
if h is not None:
    failures.append("a full handshake got in past the server-wide limit")
    h.shutdown()
else:
    counts["refused_server_wide_msg"] = err
    if "policy" not in err:
        failures.append("server-wide refusal without NBD_REP_ERR_POLICY: " + err)
for i in range(first, half_open):
    open_half(i)
counts["half_open"] = len(socks)

sel = selectors.DefaultSelector()
for s in socks:
    sel.register(s, selectors.EVENT_READ)
greeted = closed_at_once = 0
open_left = len(socks)
deadline = start + handshake_s + 8
latest = 0.0
got = {s: 0 for s in socks}
while open_left > 0 and time.monotonic() < deadline:
    for key, _ in sel.select(timeout=0.5):
        s = key.fileobj
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
        if data:
            got[s] += len(data)
            continue
        if got[s] == 0:
            closed_at_once += 1
        else:
            greeted += 1
        latest = max(latest, time.monotonic() - start)
        sel.unregister(s)
        s.close()
        open_left -= 1
counts["dropped_after_greeting"] = greeted
counts["closed_without_greeting"] = closed_at_once
counts["still_open"] = open_left
counts["last_drop_s"] = round(latest, 2)
if greeted and latest < handshake_s - 0.5:
    failures.append("the last half-open connection was dropped after %.1f s, before the "
                    "%.0f s handshake timeout" % (latest, handshake_s))
if open_left:
    failures.append("%d half-open connections still open after %.0f s" %
                    (open_left, handshake_s + 8))

# 3. Recovered.
for h in held:
    h.shutdown()
time.sleep(0.5)
h, err = try_connect(other)
if h is None:
    failures.append("after the flood, a handshake to %s failed: %s" % (other, err))
else:
    h.pread(4096, 0)
    h.shutdown()

counts["failures"] = failures
print(json.dumps(counts))
sys.exit(1 if failures else 0)
