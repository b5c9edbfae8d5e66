# Run by enospc_test.sh under nbdsh (libnbd's Python shell). ACTION:
#   garbage  writes [0, 4 MiB) three times (the cleaner's garbage later)
#   fill     writes 1 MiB chunks from chunk FIRST on, flushing every 4, until
#            the server answers ENOSPC (any other error fails); prints
#            "acked N flushed M": chunks FIRST..N-1 were acknowledged, those
#            before M were flushed
#            then, with FILLER set, on the same connection (a volume whose
#            last connection goes is closed, and a close on a full device
#            loses what was not flushed, as a crash would): deletes FILLER,
#            and a write of chunk N and a flush must succeed and chunks
#            FIRST..N read back
#   resume   one chunk write and a flush must now succeed
#   verify   chunks FIRST..LAST-1 and the garbage region hold their data
import errno
import os
import struct
import time

import nbd

URI = os.environ["URI"]
ACTION = os.environ["ACTION"]
FIRST = int(os.environ.get("FIRST", "0"))
LAST = int(os.environ.get("LAST", "0"))
MIB = 1 << 20
GARBAGE_MIB = 4


def chunk(i, tag=0):
    return struct.pack("<QQ", i, tag) * (MIB // 16)


def errname(e):
    return e.errno if isinstance(e.errno, str) else errno.errorcode.get(e.errno)


h = nbd.NBD()
h.connect_uri(URI)
size = h.get_size()
if ACTION == "garbage":
    for tag in (1, 2, 3):
        for i in range(GARBAGE_MIB):
            h.pwrite(chunk(i, tag), i * MIB)
        h.flush()
elif ACTION == "fill":
    acked = flushed = FIRST
    i = FIRST
    while (i + 1) * MIB <= size:
        try:
            h.pwrite(chunk(i), i * MIB)
            acked = i + 1
            if acked % 4 == 0:
                h.flush()
                flushed = acked
        except nbd.Error as e:
            assert errname(e) == "ENOSPC", "chunk %d: got %s (%s), want ENOSPC" % (i, errname(e), e)
            break
        i += 1
    else:
        raise AssertionError("the device never filled up")
    # Still full: a flush says ENOSPC too.
    try:
        h.flush()
        raise AssertionError("flush on a full device succeeded")
    except nbd.Error as e:
        assert errname(e) == "ENOSPC", "flush: got %s (%s)" % (errname(e), e)
    if os.environ.get("FILLER"):
        os.remove(os.environ["FILLER"])
        time.sleep(0.3)
        h.pwrite(chunk(acked), acked * MIB)
        h.flush()
        for j in range(FIRST, acked + 1):
            assert h.pread(MIB, j * MIB) == chunk(j), "chunk %d differs after resuming" % j
        flushed = acked = acked + 1
    print("acked %d flushed %d" % (acked, flushed))
elif ACTION == "resume":
    h.pwrite(chunk(FIRST), FIRST * MIB)
    h.flush()
elif ACTION == "verify":
    for i in range(GARBAGE_MIB):
        assert h.pread(MIB, i * MIB) == chunk(i, 3), "garbage region chunk %d differs" % i
    for i in range(FIRST, LAST):
        assert h.pread(MIB, i * MIB) == chunk(i), "chunk %d differs" % i
else:
    raise AssertionError("unknown ACTION " + ACTION)
h.shutdown()
