# The verifying writer of kill9_test.sh. Usage: python3 kill9_writer.py
# URI MODEL_JSON SEED [verify-only]
#
# It first checks the export against the model of what must be there, then
# (unless verify-only) writes 4 KiB blocks with a FLUSH every few writes
# until the server goes away, and saves the model.
#
# Model, per block: "durable" is the generation written and acknowledged
# before the last completed FLUSH (0 = never written: zeros); "maybe" lists
# generations written after it (acknowledged or in flight when the server
# died). After a crash a block must hold its durable generation or one of its
# maybe generations. Block contents are derived from (block, generation), so
# any other bytes, torn writes included, are detected.
#
# It writes over two connections and sends each FLUSH on a random one of them:
# the server advertises CAN_MULTI_CONN, the promise that a FLUSH on one
# connection covers writes acknowledged on every connection.
# Exit: 0 ok or server gone, 2 data mismatch (the test fails).
import json
import os
import random
import struct
import sys

import nbd

BS = 4096
NBLOCKS = 1024
FLUSH_EVERY = 8

uri, model_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
verify_only = len(sys.argv) > 4


def content(b, g):
    if g == 0:
        return bytes(BS)
    return struct.pack(">QQ", b, g) + random.Random(b * 1000003 + g).randbytes(BS - 16)


def load():
    if os.path.exists(model_path):
        with open(model_path) as f:
            m = json.load(f)
        return {int(k): v for k, v in m["durable"].items()}, \
            {int(k): v for k, v in m["maybe"].items()}, m["next_gen"]
    return {}, {}, 1


def save(durable, maybe, next_gen):
    tmp = model_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"durable": durable, "maybe": maybe, "next_gen": next_gen}, f)
    os.replace(tmp, model_path)


durable, maybe, next_gen = load()
try:
    h = nbd.NBD()
    h.connect_uri(uri)
    h2 = nbd.NBD()
    h2.connect_uri(uri)
    if not (h.can_multi_conn() and h2.can_multi_conn()):
        print("writer: the server does not advertise CAN_MULTI_CONN")
        sys.exit(2)
except nbd.Error as e:
    print("writer: cannot connect (%s)" % e)
    sys.exit(0)

# --- verify ------------------------------------------------------------------
observed = {}
try:
    for b in range(NBLOCKS):
        data = h.pread(BS, b * BS)
        allowed = [durable.get(b, 0)] + maybe.get(b, [])
        g = None
        for cand in allowed:
            if data == content(b, cand):
                g = cand
                break
        if g is None:
            hdr = struct.unpack(">QQ", data[:16])
            print("writer: MISMATCH at block %d: header %s, allowed generations %s"
                  % (b, hdr, allowed))
            sys.exit(2)
        observed[b] = g
    # What is there now is made durable before it becomes the new baseline.
    h.flush()
except nbd.Error as e:
    print("writer: server went away during verification (%s)" % e)
    sys.exit(0)
durable = {b: g for b, g in observed.items() if g != 0}
maybe = {}
save(durable, maybe, next_gen)
print("writer: verified %d blocks (%d written)" % (NBLOCKS, len(durable)))
if verify_only:
    sys.exit(0)

# --- write until the server dies ---------------------------------------------
rng = random.Random(seed)
acked = {}  # block -> generation, acknowledged since the last flush
writes = flushes = 0
try:
    while True:
        b = rng.randrange(NBLOCKS)
        g = next_gen
        next_gen += 1
        maybe.setdefault(b, []).append(g)  # before sending: it may land
        flags = nbd.CMD_FLAG_FUA if rng.random() < 0.1 else 0
        rng.choice((h, h2)).pwrite(content(b, g), b * BS, flags)
        writes += 1
        if flags:
            durable[b] = g
            maybe[b] = []
            acked.pop(b, None)
        else:
            acked[b] = g
        if writes % FLUSH_EVERY == 0:
            snapshot = dict(acked)
            rng.choice((h, h2)).flush()
            flushes += 1
            for bb, gg in snapshot.items():
                durable[bb] = gg
                # generations older than the durable one can no longer appear
                maybe[bb] = [x for x in maybe.get(bb, []) if x > gg]
            acked = {bb: gg for bb, gg in acked.items() if snapshot.get(bb) != gg}
except nbd.Error as e:
    print("writer: server went away after %d writes, %d flushes (%s)" % (writes, flushes, e))
save(durable, {b: v for b, v in maybe.items() if v}, next_gen)
sys.exit(0)
