#!/usr/bin/env bash
# Runs an NBD libFuzzer target for a bounded time with a seed corpus of valid
# client streams: nbd_fuzz (protocol layer over a memory export) or
# nbd_volume_fuzz (down to the volume engine); both read the same input
# layout (nbd/fuzz_stream.h).
# Usage: fuzz.sh [BINARY | nbd_fuzz | nbd_volume_fuzz] [SECONDS]
# A target name (default nbd_fuzz) is built first: clang, -DHBISS_FUZZ=ON, in
# build-fuzz/ (see tests/fuzz_lib.sh).
DEFAULT_TARGET=nbd_fuzz
source "$(dirname "$0")/../fuzz_lib.sh"
# Seeds: a mode byte, then a client stream. Bit 0 of the mode prepends a
# handshake; nbd_volume_fuzz reads bits 1-6 as the volume's geometry.
/usr/bin/python3 - "$CORPUS" <<'PY'
import struct, sys, os
d = sys.argv[1]
IHAVEOPT = 0x49484156454F5054
def opt(o, data=b""): return struct.pack(">QII", IHAVEOPT, o, len(data)) + data
def req(t, flags, cookie, off, ln): return struct.pack(">IHHQQI", 0x25609513, flags, t, cookie, off, ln)
def info(name, infos=()): return struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos)) + b"".join(struct.pack(">H", i) for i in infos)
def meta(name, qs): return struct.pack(">I", len(name)) + name + struct.pack(">I", len(qs)) + b"".join(struct.pack(">I", len(q)) + q for q in qs)
hello = struct.pack(">I", 3)
def write(cookie, off, data, flags=0): return req(1, flags, cookie, off, len(data)) + data
# Issue 8's crash: many scattered 4 KiB unmaps (TRIM or WRITE_ZEROES) fill
# the batch header, then a 4 KiB write at block X and a longer one at X+1.
# Mode 0x05: handshake, 4 MiB volume, 4 MiB segments.
def c1(cmd, n, big):
    s = b"\5" + b"".join(req(cmd, 0, i, i * 8192, 4096) for i in range(n))
    return s + write(n, 700 * 4096, b"x" * 4096) + write(n + 1, 701 * 4096, b"y" * big) + req(2, 0, 0, 0, 0)
seeds = {
  "list": b"\0" + hello + opt(3) + opt(2),
  "info": b"\0" + hello + opt(8) + opt(9, meta(b"vm", [])) + opt(6, info(b"vm", [3, 1, 2])) + opt(5) + opt(7, info(b"ro")) + req(0, 0, 1, 0, 512),
  "exportname": b"\0" + struct.pack(">I", 1) + opt(1, b"vm") + req(1, 1, 1, 0, 4) + b"abcd" + req(2, 0, 2, 0, 0),
  "io": b"\1" + req(1, 1, 1, 4096, 8) + b"12345678" + req(0, 4, 2, 4096, 8) + req(7, 0, 3, 0, 1 << 20) + req(7, 8, 4, 0, 100) + req(4, 0, 5, 0, 4096) + req(6, 2 | 16, 6, 8192, 4096) + req(3, 0, 7, 0, 0) + req(5, 0, 8, 0, 4096) + req(2, 0, 9, 0, 0),
  "bad": b"\1" + req(0, 0, 1, 1 << 20, 1) + req(1, 0, 2, 0, 0) + req(9, 0, 3, 0, 1) + req(0, 512, 4, 0, 1),
  # 2 MiB volume, 256 KiB segments, cleaner on, small checkpoint interval:
  # overwrites and unaligned I/O roll segments and give the cleaner work.
  "volume_churn": bytes([0x1 | 0x2 | 0x8 | 0x10]) + b"".join(write(i, (i * 37 % 500) * 4096 + (i % 3) * 100, bytes([i % 251]) * (4096 + i % 5 * 1000)) for i in range(40)) + req(3, 0, 50, 0, 0) + req(4, 0, 51, 0, 1 << 20) + req(6, 0, 52, 4000, 70000) + req(7, 0, 53, 0, 2 << 20) + req(0, 0, 54, 0, 1 << 20) + req(2, 0, 55, 0, 0),
  "c1_trims": c1(4, 300, 128 << 10),
  "c1_zeroes": c1(6, 300, 128 << 10),
}
# TLS (nbd_fuzz mode bit 7, see nbd_fuzz.cc): the STARTTLS state machine, and
# real ClientHellos (made here with Python's ssl over memory BIOs) fed to
# GnuTLS after STARTTLS (bit 5 prepends the flags and the STARTTLS option).
import ssl
def client_hello(**kw):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for k, v in kw.items(): setattr(ctx, k, v)
    i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
    c = ctx.wrap_bio(i, o, server_hostname="localhost")
    try:
        c.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return o.read()
seeds["tls_on_state"] = b"\x80" + hello + opt(5, b"x") + opt(3) + opt(6, info(b"vm")) + opt(5) + opt(3) + opt(2)
seeds["tls_require_state"] = b"\xc0" + hello + opt(3) + opt(8) + opt(6, info(b"vm")) + opt(7, info(b"vm")) + opt(1, b"vm")
seeds["tls_clienthello"] = b"\xe0" + client_hello()
seeds["tls_clienthello12"] = b"\xa0" + client_hello(maximum_version=ssl.TLSVersion.TLSv1_2)
for k, v in seeds.items():
    open(os.path.join(d, k), "wb").write(v)
PY
fuzz_regress "$FUZZ_ROOT/nbd/fuzz_regress"
if [ "$TARGET" = nbd_volume_fuzz ]; then
  # Room for the C1 seeds (a 128 KiB write) and for engine work per input.
  fuzz_run -max_len=262144 -rss_limit_mb=2048 -timeout=20
else
  fuzz_run -max_len=4096 -rss_limit_mb=1024 -timeout=10
fi
