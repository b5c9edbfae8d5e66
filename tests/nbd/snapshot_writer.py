# The writer of snapshot_test.sh: one write at a time (QD1) to the blocks of
# [BASE, BASE + BLOCKS * 4096) of an NBD export, round robin: write number s
# goes to block s % BLOCKS and fills it with the 8-byte little-endian s + 1
# (never zero: a block of zeros is one never written).
# After each acknowledged write it prints s (flushed), so the test knows how
# many writes were acknowledged before and after a snapshot. Stops when the
# file STOP exists.
#
# check mode: `snapshot_writer.py check IMAGE BASE BLOCKS LOW HIGH` reads a
# raw image of the export (or snapshot) and verifies that its writer region
# is the state after exactly K writes, for one K in [LOW, HIGH]: a snapshot
# is atomic with respect to the writes (every one acknowledged before it is
# in it, none after it returned).
import os
import struct
import sys

BLOCK = 4096


def state_after(k, blocks):
    """The value each block holds after writes 0..k-1 (None: never written)."""
    out = [None] * blocks
    for b in range(blocks):
        # The last write s < k with s % blocks == b.
        if k > b:
            out[b] = b + ((k - 1 - b) // blocks) * blocks
    return out


def check(image, base, blocks, low, high):
    with open(image, "rb") as f:
        f.seek(base)
        data = f.read(blocks * BLOCK)
    got = []
    for b in range(blocks):
        blk = data[b * BLOCK:(b + 1) * BLOCK]
        if blk == bytes(BLOCK):
            got.append(None)
            continue
        (v,) = struct.unpack_from("<Q", blk)
        if blk != struct.pack("<Q", v) * (BLOCK // 8):
            sys.exit(f"block {b}: torn or foreign content")
        got.append(v - 1)
    seen = [s for s in got if s is not None]
    k = max(seen) + 1 if seen else 0
    want = state_after(k, blocks)
    if got != want:
        bad = [(b, got[b], want[b]) for b in range(blocks) if got[b] != want[b]]
        sys.exit(f"the writer region is not the state after any prefix of writes (k={k}): "
                 f"{len(bad)} blocks differ, (block, holds, expected) first: {bad[:8]}")
    if not low <= k <= high:
        sys.exit(f"the snapshot holds {k} writes, outside [{low}, {high}]")
    print(k)


def write(uri, base, blocks, stop):
    import nbd

    h = nbd.NBD()
    h.connect_uri(uri)
    s = 0
    while not os.path.exists(stop):
        h.pwrite(struct.pack("<Q", s + 1) * (BLOCK // 8), base + (s % blocks) * BLOCK)
        print(s, flush=True)
        s += 1
    h.flush()
    h.shutdown()


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    else:
        write(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
