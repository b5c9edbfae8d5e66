# The verifying writer of hdfs_rounds_test.sh. Usage:
#   python3 hdfs_rounds_writer.py URI MODEL_JSON ROUND [verify-only]
#
# 1. Verifies the export against the model left by the earlier rounds and prints one line
#    "VERIFIED round=R blocks=N durable=D new=X old=Y lost=L": D blocks had a write
#    acknowledged before the last completed FLUSH; X of those that also had later writes
#    (acknowledged or in flight when the server died) hold a later write, Y the flushed one;
#    L blocks hold anything else (a flushed write lost, or bytes never written: the test
#    fails). What it read becomes the new baseline.
# 2. Unless verify-only, prints "WRITING" and writes until the server goes away: batches of
#    8..48 writes of 1..8 blocks (4 KiB) to distinct random places, all in flight at once
#    (aio), then one FLUSH once every write of the batch is acknowledged; "FLUSHED" after
#    the first (this server owns the volume then). The model is saved before each batch is
#    sent, after every FLUSH and at the end.
#
# Model, per block: "durable" is the write covered by the last completed FLUSH (absent =
# never written: zeros); "maybe" lists the writes after it. After a crash a block must hold
# its durable write or one of its maybe writes. A block's bytes are derived from (block,
# round, serial), and carry them in a header, so any other bytes, torn writes included,
# are caught and named.
# Exit: 0 ok (the server went away while writing is expected), 2 data lost or corrupt,
# 3 the server went away during verification (the test kills only while writing).
import json
import os
import random
import struct
import sys
import time

import nbd

BS = 4096

uri, model_path, rnd = sys.argv[1], sys.argv[2], int(sys.argv[3])
verify_only = len(sys.argv) > 4


def content(b, w):
    """The 4 KiB of block b written by write w = [round, serial]; None = never written."""
    if w is None:
        return bytes(BS)
    r, s = w
    return struct.pack(">QQQ", b, r, s) + random.Random((b << 40) ^ (r << 24) ^ s).randbytes(BS - 24)


def load():
    if os.path.exists(model_path):
        with open(model_path) as f:
            m = json.load(f)
        return ({int(k): v for k, v in m["durable"].items()},
                {int(k): v for k, v in m["maybe"].items()}, m["stats"])
    return {}, {}, {"acked": 0, "flushes": 0, "rounds": 0}


def save(durable, maybe, stats):
    tmp = model_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"durable": durable, "maybe": {b: v for b, v in maybe.items() if v},
                   "stats": stats}, f)
    os.replace(tmp, model_path)


durable, maybe, stats = load()
h = nbd.NBD()
if os.environ.get("HBISS_NBD_DEBUG") == "1":
    h.set_debug(True)
try:
    h.connect_uri(uri)
except nbd.Error as e:
    print(f"writer: cannot connect ({e})")
    sys.exit(3)
nblocks = h.get_size() // BS

# --- verify ----------------------------------------------------------------------------------
t0 = time.time()
observed, lost = {}, []
new = old = 0
CHUNK = 256  # blocks per read
try:
    for base in range(0, nblocks, CHUNK):
        data = h.pread(min(CHUNK, nblocks - base) * BS, base * BS)
        for i in range(len(data) // BS):
            b = base + i
            got = data[i * BS:(i + 1) * BS]
            d = durable.get(b)
            if got == content(b, d):
                observed[b] = d
                if maybe.get(b):
                    old += 1
                continue
            w = next((w for w in maybe.get(b, []) if got == content(b, w)), None)
            if w is not None:
                observed[b] = w
                new += 1
                continue
            lost.append((b, struct.unpack(">QQQ", got[:24]), d, maybe.get(b, [])))
            observed[b] = d
except nbd.Error as e:
    print(f"writer: the server went away during verification ({e})")
    sys.exit(3)
for b, hdr, d, m in lost[:10]:
    print(f"writer: LOST block {b}: holds header (block, round, serial) = {hdr}; "
          f"flushed write {d}, later writes {m}")
print(f"VERIFIED round={rnd} blocks={nblocks} durable={len(durable)} new={new} old={old} "
      f"lost={len(lost)} in {time.time() - t0:.2f} s")
if lost:
    sys.exit(2)
# What the volume holds now is what the log holds; once a flush completes on this server it
# is the baseline (below). Until then a crash may leave it or the older state: both are in
# the model already.
if verify_only:
    sys.exit(0)

# --- write until the server goes away ---------------------------------------------------------
rng = random.Random(rnd * 7919 + 17)
serial = 0
acked_round = flushes_round = 0
print("WRITING", flush=True)
try:
    while True:
        batch = {}  # block -> write, the batch's blocks are distinct
        cookies = []
        bufs = []
        for _ in range(rng.randrange(8, 49)):
            n = rng.randrange(1, 9)
            b0 = rng.randrange(nblocks - n + 1)
            if any(b in batch for b in range(b0, b0 + n)):
                continue
            serial += 1
            w = [rnd, serial]
            data = bytearray()
            for b in range(b0, b0 + n):
                batch[b] = w
                maybe.setdefault(b, []).append(w)  # before sending: it may land
                data += content(b, w)
            bufs.append((nbd.Buffer.from_bytearray(data), b0 * BS))
        save(durable, maybe, stats)  # the batch's writes may land: even if this process dies
        for buf, off in bufs:
            cookies.append(h.aio_pwrite(buf, off))
        while h.aio_in_flight() > 0:
            h.poll(-1)
        for c in cookies:
            h.aio_command_completed(c)  # raises if the write failed
        acked_round += len(cookies)
        h.flush()
        flushes_round += 1
        for b, w in batch.items():
            durable[b] = w
            maybe[b] = []
        if flushes_round == 1:
            print("FLUSHED", flush=True)  # this server owns the volume now
            # The first flush on this server also makes the baseline durable: every block
            # outside the batch holds what verification read (writes of earlier rounds that
            # the log kept, or their flushed write).
            for b in list(maybe):
                if b in batch:
                    continue
                if observed.get(b) is None:
                    durable.pop(b, None)
                else:
                    durable[b] = observed[b]
                maybe[b] = []
        stats["acked"] += len(cookies)
        stats["flushes"] += 1
        save(durable, maybe, stats)
except nbd.Error as e:
    print(f"writer: the server went away after {acked_round} acknowledged writes, "
          f"{flushes_round} flushes ({e})")
stats["rounds"] += 1
save(durable, maybe, stats)
sys.exit(0)
