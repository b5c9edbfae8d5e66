# A libnbd client that keeps one connection open and writes for a while:
#   writer.py URI SECONDS READY_FILE
# Writes 64 KiB blocks across the first 16 MiB, flushing every 16 writes,
# touches READY_FILE once the first write and flush returned, and exits 0
# after SECONDS (nonzero on any NBD error).
import sys
import time

import nbd

uri, seconds, ready = sys.argv[1], float(sys.argv[2]), sys.argv[3]
h = nbd.NBD()
h.connect_uri(uri)
buf = bytes(range(256)) * 256
end = time.monotonic() + seconds
n = 0
while True:
    h.pwrite(buf, (n % 256) * len(buf))
    n += 1
    if n % 16 == 1:
        h.flush()
        if n == 1:
            open(ready, "w").close()
    if time.monotonic() > end:
        break
    time.sleep(0.005)
h.flush()
h.shutdown()
print(f"wrote {n} blocks")
