# The client of hdfs_export_test.sh. Usage:
#   python3 export_while_writing.py NBD_URI HBISS_BIN STORE VOLUME WORKDIR
#
# Writes 4 KiB blocks to the export and flushes them, then runs `hbiss export VOLUME` (a
# read-only open of the same volume in another process) three times while it keeps writing.
# Every write and flush must succeed (issue #9: the export's open used to end the server's
# open segment, and its next write failed for good). Each exported image must hold exactly
# what was flushed before that export began, except in the blocks written during it, which
# may hold their flushed or any newer content.
# Exit: 0 ok, 1 a write or flush failed, 2 an exported image is wrong, 3 an export failed.
import random
import struct
import subprocess
import sys

import nbd

BS = 4096
ROUNDS = 3
BEFORE = 256  # blocks written and flushed before each export
DURING = range(3000, 3200)  # blocks written while an export runs

uri, hbiss, store, volume, workdir = sys.argv[1:6]


def content(b, g):
    if g == 0:
        return bytes(BS)
    return struct.pack(">QQ", b, g) + random.Random(b * 1000003 + g).randbytes(BS - 16)


h = nbd.NBD()
h.connect_uri(uri)
nblocks = h.get_size() // BS
flushed = {}  # block -> generation covered by the last completed FLUSH
written = {}  # block -> generation last written
gen = 1
rng = random.Random(9)


def write(b):
    global gen
    try:
        h.pwrite(content(b, gen), b * BS)
    except nbd.Error as e:
        print(f"write of block {b} failed: {e}", file=sys.stderr)
        sys.exit(1)
    written[b] = gen
    gen += 1


def flush():
    try:
        h.flush()
    except nbd.Error as e:
        print(f"flush failed: {e}", file=sys.stderr)
        sys.exit(1)
    flushed.update(written)


for r in range(ROUNDS):
    for b in range(r * BEFORE, (r + 1) * BEFORE):
        write(b)
    for b in DURING:
        if b not in written:
            write(b)
    flush()
    image = f"{workdir}/export{r}.img"
    proc = subprocess.Popen([hbiss, "--store", store, "export", volume, image],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    start = dict(flushed)
    allowed = {b: {start.get(b, 0)} for b in DURING}
    n = 0
    while proc.poll() is None or n < 64:
        b = rng.choice(DURING)
        write(b)
        allowed[b].add(written[b])
        n += 1
        if n % 16 == 0:
            flush()
    err = proc.communicate()[1].decode(errors="replace")
    if proc.returncode != 0:
        print(f"export {r} failed ({proc.returncode}): {err}", file=sys.stderr)
        sys.exit(3)
    flush()
    bad = 0
    with open(image, "rb") as f:
        for b in range(nblocks):
            got = f.read(BS)
            ok = any(got == content(b, g) for g in allowed[b]) if b in allowed \
                else got == content(b, start.get(b, 0))
            if not ok:
                bad += 1
                if bad <= 5:
                    print(f"export {r}: block {b} is wrong", file=sys.stderr)
    if bad:
        print(f"export {r}: {bad} blocks wrong", file=sys.stderr)
        sys.exit(2)
    print(f"export {r}: {n} writes during it, image ok")

# The server still writes after the exports.
for b in range(ROUNDS * BEFORE, ROUNDS * BEFORE + 16):
    write(b)
flush()
h.shutdown()
print("writer never failed")
