#!/usr/bin/env bash
# Runs the volume engine's libFuzzer target (volume/volume_fuzz.cc) for a
# bounded time: first every input in volume/fuzz_regress/ once, then fuzzing
# from a seed corpus written here.
# Usage: fuzz.sh [VOLUME_FUZZ_BINARY] [SECONDS]
# Without a binary it builds volume_fuzz: clang, -DHBISS_FUZZ=ON, in
# build-fuzz/ (see tests/fuzz_lib.sh).
DEFAULT_TARGET=volume_fuzz
source "$(dirname "$0")/../fuzz_lib.sh"
# Seeds, in the input format of volume_fuzz.cc (its header comment).
/usr/bin/python3 - "$CORPUS" <<'PY'
import struct, sys, os
(W, TRIM, ZERO, FLUSH, READ, BS, CLEAN, REOPEN, CRASH, ARM, SCATTER_W, SCATTER_T, SEQ, READ_ALL,
 BS_ALL, INFO) = range(16)
NO_SPACE = 0xe3  # opcode 16
# size: 1, 2, 4, 16 MiB (64 MiB with big); seg: 64 KiB, 256 KiB, 1 MiB, 4 MiB; ckpt: 64 KiB .. 8 MiB
def geom(size, seg, clean, ckpt, big=0):
    return bytes([size | seg << 2 | clean << 4 | ckpt << 5 | big << 7])
def code(n):  # the length code of n units (n must have at most 12 significant bits)
    e = n.bit_length() - 1
    m = ((n << 11) >> e) - 2048
    assert ((2048 + m) << e) >> 11 == n, n
    return struct.pack("<H", e << 11 | m)
def A(op, block, nblocks): return bytes([op | 0x10]) + struct.pack("<H", block) + code(nblocks)
def U(op, off, n): return bytes([op]) + struct.pack("<I", off) + code(n)
def many(op, n, first, arg): return bytes([op]) + struct.pack("<HHB", n - 1, first, arg)
# Issue 8's crash: scattered 4 KiB writes or trims fill the batch header,
# then a 4 KiB write at block X and a longer one at X+1, no flush.
def c1(kind, n, seg, big):
    return geom(3, seg, 0, 3) + b"\7" + many(kind, n, 0, 0) + A(W, 2001, 1) + A(W, 2002, big) + bytes([READ_ALL])
seeds = {
  "c1_writes": c1(SCATTER_W, 230, 3, 26),
  "c1_writes_300": c1(SCATTER_W, 300, 3, 64),
  "c1_trims": c1(SCATTER_T, 300, 3, 64),
  "c1_trims_1m_segments": c1(SCATTER_T, 300, 2, 40),
  "mixed": geom(1, 0, 1, 0) + b"\3" + A(W, 0, 16) + U(W, 5000, 10000) + A(TRIM, 3, 2) + U(ZERO, 7, 9000)
           + bytes([FLUSH]) + A(READ, 0, 32) + U(READ, 1, 69632) + A(BS, 0, 64) + U(BS, 4095, 9000)
           + bytes([CLEAN, 10]) + many(SEQ, 40, 10, 3) + bytes([REOPEN, READ_ALL, BS_ALL, INFO]),
  "crash_now": geom(0, 0, 0, 0) + b"\5" + many(SCATTER_W, 50, 3, 1) + bytes([FLUSH]) + many(SEQ, 30, 0, 2)
           + bytes([CRASH, 0]) + A(W, 10, 5) + bytes([CRASH, 1, READ_ALL]),
  "crash_armed": geom(1, 0, 1, 0) + b"\7" + many(SEQ, 40, 0, 1) + bytes([FLUSH, ARM, 7, 0])
           + many(SCATTER_W, 100, 5, 3) + bytes([FLUSH]) + U(W, 1, 1 << 20) + bytes([CLEAN, 10, READ_ALL]),
  "crash_in_clean": geom(0, 0, 0, 0) + b"\11" + many(SEQ, 60, 0, 0) + many(SEQ, 60, 0, 0)
           + bytes([FLUSH, ARM, 3, 1, CLEAN, 10, CLEAN, 10, READ_ALL]),
  "big_writes": geom(3, 1, 1, 1) + b"\2" + U(W, 12345, 16 << 20) + A(W, 0, 2048) + bytes([FLUSH])
           + U(W, 1, 3 << 20) + bytes([CLEAN, 8, BS_ALL, READ_ALL]),
  # Writes of 32 MiB, the most one operation may write (volume.h), on the 64 MiB geometry.
  "writes_of_32m": geom(0, 3, 1, 1, 1) + b"\4" + U(W, 4097, 32 << 20) + bytes([FLUSH]) + A(W, 8192, 8192)
           + A(TRIM, 100, 4096) + bytes([CLEAN, 10, READ_ALL]) + A(READ, 0, 16384),
  # A full store for a while: writes and flushes may fail with NoSpace and change nothing.
  "no_space": geom(1, 0, 0, 0) + b"\6" + many(SEQ, 30, 0, 3) + bytes([FLUSH, NO_SPACE, 2])
           + many(SCATTER_W, 40, 3, 1) + bytes([FLUSH]) + U(W, 100, 303104) + bytes([NO_SPACE, 7])
           + many(SEQ, 20, 500, 7) + bytes([FLUSH, READ_ALL, REOPEN, READ_ALL]),
  "no_space_crash": geom(2, 1, 1, 0) + b"\10" + many(SEQ, 64, 0, 7) + bytes([NO_SPACE, 0])
           + many(SCATTER_W, 100, 1, 2) + bytes([ARM, 5, 0]) + many(SEQ, 64, 9, 7) + bytes([FLUSH, READ_ALL]),
  "checkpoints": geom(2, 1, 1, 0) + b"\13" + b"".join(many(SEQ, 64, i * 37, 7) + bytes([FLUSH]) for i in range(8))
           + bytes([REOPEN]) + many(SCATTER_T, 200, 1, 3) + bytes([ARM, 40, 1]) + many(SEQ, 100, 0, 15) + bytes([READ_ALL]),
}
for k, v in seeds.items():
    open(os.path.join(sys.argv[1], k), "wb").write(v)
PY
fuzz_regress "$FUZZ_ROOT/volume/fuzz_regress"
fuzz_run -max_len=4096 -rss_limit_mb=2048 -timeout=20
