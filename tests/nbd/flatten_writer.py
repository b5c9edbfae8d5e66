# The writer of flatten_test.sh: one write at a time (QD1) to random 4 KiB
# blocks of [0, BLOCKS * 4096) of an NBD export; write number s fills its
# block with the 8-byte little-endian (s + 1) << 32 | block. After each
# acknowledged write it prints "s block" (flushed). Stops when the file STOP
# exists.
#
# apply mode: `flatten_writer.py apply IMAGE LOG` writes every logged write
# into the raw IMAGE, so that it becomes what the export must read as.
import os
import random
import struct
import sys

BLOCK = 4096


def content(s, block):
    return struct.pack("<Q", (s + 1) << 32 | block) * (BLOCK // 8)


def write(uri, blocks, stop):
    import nbd
    h = nbd.NBD()
    h.connect_uri(uri)
    rng = random.Random(7)
    s = 0
    while not os.path.exists(stop):
        b = rng.randrange(blocks)
        h.pwrite(content(s, b), b * BLOCK)
        print(s, b, flush=True)
        s += 1
    h.flush()
    h.shutdown()


def apply(image, log):
    with open(image, "r+b") as f, open(log) as lines:
        for line in lines:
            s, b = map(int, line.split())
            f.seek(b * BLOCK)
            f.write(content(s, b))


if __name__ == "__main__":
    if sys.argv[1] == "apply":
        apply(sys.argv[2], sys.argv[3])
    else:
        write(sys.argv[1], int(sys.argv[2]), sys.argv[3])
