# Run by packing_test.sh under nbdsh. PHASE=write sends the patterns (no
# flush until each is verified), keeping a model of the volume; it saves the
# model's written extents so PHASE=verify (after a server restart) can check
# them again.
import os
import random

import nbd

URI = os.environ["URI"]
PHASE = os.environ["PHASE"]
STATE = os.environ["STATE"]
BS = 4096

h = nbd.NBD()
h.connect_uri(URI)
size = h.get_size()
model = {}  # block -> 4 KiB of bytes (absent: zeros)


def data(block, tag):
    return bytes([(block * 7 + tag + i) & 0xFF for i in range(0, 64)]) * (BS // 64)


def write(block, nblocks, tag):
    buf = b"".join(data(block + i, tag) for i in range(nblocks))
    h.pwrite(buf, block * BS)
    for i in range(nblocks):
        model[block + i] = buf[i * BS:(i + 1) * BS]


def trim(block, nblocks):
    h.trim(nblocks * BS, block * BS)
    for i in range(nblocks):
        model.pop(block + i, None)


def verify(what):
    for b in sorted(model):
        got = h.pread(BS, b * BS)
        assert got == model[b], "%s: block %d differs" % (what, b)
    # A few never-written or trimmed blocks read as zeros.
    for b in random.Random(1).sample(range(size // BS), 200):
        if b not in model:
            assert h.pread(BS, b * BS) == bytes(BS), "%s: block %d not zero" % (what, b)


if PHASE == "write":
    tag = 0
    # Writes: N scattered 4 KiB writes, 4 KiB at X, >= 104 KiB at X+1.
    base = 0
    for n in (200, 230, 240):
        for tail_kib in (104, 128, 1024):
            tag += 1
            for i in range(n):
                write(base + 3 * i, 1, tag)
            x = base + 3 * n + 10
            write(x, 1, tag)
            write(x + 1, tail_kib // 4, tag)
            base = x + 1 + tail_kib // 4 + 100
    verify("writes, before any flush")
    # Trims: 300 scattered trims, then the same two writes.
    write(base, 1024, 99)
    h.flush()
    for n in (290, 300, 310):
        for i in range(n):
            trim(base + 2 * i, 1)
        x = base + 2 * n + 50
        write(x, 1, n)
        write(x + 1, 32, n)
    verify("trims, before any flush")
    h.flush()
    verify("after a flush")
    with open(STATE, "w") as f:
        for b in sorted(model):
            f.write("%d %s\n" % (b, model[b][:64].hex()))
    print("packing: %d blocks written and verified" % len(model))
else:
    with open(STATE) as f:
        for line in f:
            b, head = line.split()
            model[int(b)] = bytes.fromhex(head) * (BS // 64)
    os.unlink(STATE)
    verify("after a restart")
    print("packing: %d blocks verified after a restart" % len(model))
h.shutdown()
