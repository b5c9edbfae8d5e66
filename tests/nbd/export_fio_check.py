# Checks an image that `hbiss export` made while fio wrote the volume (hdfs_export_fio_test.sh).
#   python3 export_fio_check.py IMAGE SIZE FIO_BYTES MARK_BASE ROUND
#
# The volume is SIZE bytes. [0, FIO_BYTES) holds fio's 4 KiB verify blocks (verify=md5,
# verify_interval=4096): it was filled before the first export and fio only rewrites whole
# blocks, so every block of the image must be one whole block fio wrote for that offset (old
# or new, never torn, zero or misplaced): magic 0xacca, len 4096, the header's offset equal
# to the block's, fio's header CRC32C, and the MD5 of the rest of the block.
# From MARK_BASE the markers the test wrote and flushed before each export began:
#   block MARK_BASE: the round counter, overwritten each round (bytes of ROUND+1);
#   block MARK_BASE+1+k: written in round k (bytes of k+1), never overwritten.
# So image ROUND must hold the counter ROUND+1 (not an older one), the blocks of every round
# up to ROUND, and zeros for the later rounds (written only after this export ended).
# Exit 0 ok (prints a summary), 1 wrong (prints what).
import hashlib
import os
import struct
import sys

BS = 4096


def crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


TABLE = crc_table()


def fio_crc32c(b):
    # fio's crc32c: the Castagnoli CRC without the final inversion.
    c = 0xFFFFFFFF
    for x in b:
        c = TABLE[(c ^ x) & 0xFF] ^ (c >> 8)
    return c


def main():
    image, size, fio_bytes, mark_base, rnd = sys.argv[1], *map(int, sys.argv[2:6])
    errors = []
    got_size = os.path.getsize(image)
    if got_size != size:
        errors.append(f"image is {got_size} bytes, the volume {size}")
    with open(image, "rb") as f:
        data = f.read()
    bad = 0
    for off in range(0, min(fio_bytes, len(data)), BS):
        blk = data[off:off + BS]
        magic, _vt, ln, _seed, hoff = struct.unpack_from("<HHIQQ", blk)
        hcrc, = struct.unpack_from("<I", blk, 36)
        why = None
        if magic != 0xacca:
            why = f"magic {magic:#x}" + (" (zeros)" if blk == bytes(BS) else "")
        elif ln != BS:
            why = f"len {ln}"
        elif hoff != off:
            why = f"fio wrote it for offset {hoff}"
        elif hcrc != fio_crc32c(blk[:36]):
            why = "header crc"
        elif blk[40:56] != hashlib.md5(blk[56:]).digest():
            why = "md5 of the data (torn or corrupt)"
        if why:
            bad += 1
            if bad <= 5:
                errors.append(f"block at {off}: {why}")
    if bad:
        errors.append(f"{bad} of {fio_bytes // BS} fio blocks wrong")

    def mark(block):
        return data[block * BS:(block + 1) * BS]

    base = mark_base // BS
    counter = mark(base)
    if counter != bytes([rnd + 1]) * BS:
        errors.append(f"round counter holds {counter[0]} (first byte), wanted {rnd + 1}: "
                      "the export missed a write flushed before it began")
    for k in range(0, 64):
        want = bytes([k + 1]) * BS if k <= rnd else bytes(BS)
        if mark(base + 1 + k) != want:
            errors.append(f"marker of round {k} holds {mark(base + 1 + k)[0]}, wanted {want[0]}")
    if errors:
        print("\n".join(errors))
        return 1
    print(f"image {rnd}: {fio_bytes // BS} fio blocks whole and in place, markers 0..{rnd} there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
