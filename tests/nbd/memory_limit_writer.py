# One writer of memory_limit_test.sh. Usage: python3 memory_limit_writer.py
# URI SEED MIB
#
# Writes MIB 1 MiB chunks with no FLUSH in between (so the data sits in the
# server's write buffers until the budget makes it close segments), then one
# FLUSH, then reads every chunk back on a new connection.
# Exit: 0 ok, 2 a chunk read back wrong.
import random
import sys

import nbd

MIB = 1 << 20
uri, seed, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def chunk(i):
    return random.Random(seed * 1000003 + i).randbytes(MIB)


h = nbd.NBD()
h.connect_uri(uri)
for i in range(n):
    h.pwrite(chunk(i), i * MIB)
h.flush()
h.shutdown()

h = nbd.NBD()
h.connect_uri(uri)
for i in range(n):
    if h.pread(MIB, i * MIB) != chunk(i):
        print(f"seed {seed}: chunk {i} reads back wrong", file=sys.stderr)
        sys.exit(2)
h.shutdown()
