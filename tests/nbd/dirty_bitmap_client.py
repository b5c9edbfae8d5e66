"""A backup tool's side of dirty_bitmap_test.sh, with libnbd (nbdsh's python).

  extents URI CONTEXT...        for each context (all negotiated on one
                                connection), prints "CONTEXT OFFSET LENGTH FLAGS"
                                for every extent of the whole export, merged
  backup URI BITMAP FILE        copies the extents that qemu:dirty-bitmap:BITMAP
                                reports dirty from URI into FILE (a copy of the
                                snapshot BITMAP), at their offsets; prints the
                                bytes copied

Block status is asked in pieces of at most 256 MiB; the server may answer less
and the loop goes on from where each answer ended (per context).
"""
import sys

import nbd

STEP = 256 << 20


def status(h, size, contexts):
    """{context: [(offset, length, flags)]} over [0, size), merged."""
    out = {c: [] for c in contexts}
    pos = {c: 0 for c in contexts}
    while min(pos.values()) < size:
        start = min(pos.values())
        got = {}

        def cb(ctx, offset, entries, err):
            got[ctx] = (offset, entries)
            return 0

        h.block_status(min(STEP, size - start), start, cb)
        for c in contexts:
            if pos[c] != start:
                continue  # ahead of the slowest context: ignore this answer
            if c not in got:
                sys.exit(f"no answer for {c} at {start}")
            offset, entries = got[c]
            assert offset == start, (c, offset, start)
            for i in range(0, len(entries), 2):
                length, flags = entries[i], entries[i + 1]
                length = min(length, size - pos[c])
                ext = out[c]
                if ext and ext[-1][2] == flags and ext[-1][0] + ext[-1][1] == pos[c]:
                    ext[-1] = (ext[-1][0], ext[-1][1] + length, flags)
                else:
                    ext.append((pos[c], length, flags))
                pos[c] += length
    return out


def connect(uri, contexts):
    h = nbd.NBD()
    for c in contexts:
        h.add_meta_context(c)
    h.connect_uri(uri)
    for c in contexts:
        if not h.can_meta_context(c):
            sys.exit(f"the server did not select {c}")
    return h


def main():
    cmd, uri = sys.argv[1], sys.argv[2]
    if cmd == "extents":
        contexts = sys.argv[3:]
        h = connect(uri, contexts)
        for c, exts in status(h, h.get_size(), contexts).items():
            for off, length, flags in exts:
                print(c, off, length, flags)
    elif cmd == "backup":
        bitmap, path = sys.argv[3], sys.argv[4]
        ctx = "qemu:dirty-bitmap:" + bitmap
        h = connect(uri, [ctx])
        copied = 0
        with open(path, "r+b") as f:
            for off, length, flags in status(h, h.get_size(), [ctx])[ctx]:
                if not flags & 1:  # NBD_STATE_DIRTY
                    continue
                for at in range(off, off + length, 16 << 20):
                    n = min(16 << 20, off + length - at)
                    f.seek(at)
                    f.write(h.pread(n, at))
                    copied += n
        print(copied)
    else:
        sys.exit("usage: see the module docstring")


if __name__ == "__main__":
    main()
