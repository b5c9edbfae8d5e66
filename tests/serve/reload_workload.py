# A client that must never see an error while the server reloads: one
# connection writing and reading back a 64 KiB pattern per offset, until the
# STOP file exists. Prints the number of verified rounds; any error fails.
import os
import sys
import time

import nbd

uri, stop = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.connect_uri(uri)
size = h.get_size()
block = 64 << 10
rounds = 0
deadline = time.time() + 50
while not os.path.exists(stop):
    if time.time() > deadline:
        sys.exit("workload: no stop file after 50 s")
    off = (rounds * block) % (size - block)
    data = bytes([(rounds + i) & 0xFF for i in range(256)]) * (block // 256)
    h.pwrite(data, off)
    if h.pread(block, off) != data:
        sys.exit(f"workload: round {rounds}: read back differs at offset {off}")
    rounds += 1
h.flush()
h.shutdown()
print(rounds)
