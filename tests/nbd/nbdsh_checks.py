# Run by nbdsh_test.sh under nbdsh (libnbd's Python shell). Sends requests the
# spec forbids, with libnbd's client-side checks off (strict mode 0), and
# checks the server answers each with the error the spec requires while the
# connection stays usable. MODE: "rw" (writable) or "ro" (server --read-only).
import errno
import os

import nbd

URI = os.environ["URI"]
MODE = os.environ.get("MODE", "rw")
checks = 0


def expect_err(what, want, fn, *args, **kw):
    global checks
    try:
        fn(*args, **kw)
    except nbd.Error as e:
        # libnbd reports the errno by name ("EINVAL") in this binding.
        got = e.errno if isinstance(e.errno, str) else errno.errorcode.get(e.errno)
        assert got == errno.errorcode[want], "%s: got %s (%s), want %s" % (
            what, got, e, errno.errorcode[want])
        checks += 1
        return
    raise AssertionError("%s: succeeded, want errno %d" % (what, want))


def connect(structured=True):
    h = nbd.NBD()
    h.set_strict_mode(0)
    h.set_request_structured_replies(structured)
    if structured:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(URI)
    return h


def roundtrip(h, off):
    global checks
    data = os.urandom(4096)
    h.pwrite(data, off, nbd.CMD_FLAG_FUA)
    assert h.pread(4096, off) == data
    checks += 1


# --- option haggling ---------------------------------------------------------
o = nbd.NBD()
o.set_opt_mode(True)
o.connect_uri(URI)
names = []
o.opt_list(lambda name, desc: names.append(name))
assert sorted(names) == ["other", "vm"], names
ctxs = []
o.opt_list_meta_context(lambda name: ctxs.append(name))
assert ctxs == ["base:allocation"], ctxs
o.set_export_name("nosuch")
try:
    o.opt_info()
    raise AssertionError("opt_info of an unknown export succeeded")
except nbd.Error:
    pass
o.set_export_name("vm")
o.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
o.opt_info()
assert o.get_size() == 64 << 20
assert o.get_block_size(nbd.SIZE_MINIMUM) == 1
assert o.get_block_size(nbd.SIZE_PREFERRED) == 4096
assert o.get_block_size(nbd.SIZE_MAXIMUM) == 32 << 20
o.opt_go()
assert o.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
o.shutdown()
checks += 1

h = connect()
size = h.get_size()
assert size == 64 << 20
E = errno

if MODE == "ro":
    assert h.is_read_only()
    expect_err("write on read-only", E.EPERM, h.pwrite, b"x" * 512, 0)
    expect_err("trim on read-only", E.EPERM, h.trim, 4096, 0)
    expect_err("zero on read-only", E.EPERM, h.zero, 4096, 0)
    expect_err("write past the end on read-only", E.EPERM, h.pwrite, b"x", size)
    assert h.pread(512, 0) is not None
    h.flush()
    print("nbdsh ro: %d checks passed" % (checks + 1))
    raise SystemExit(0)

# --- out-of-range requests ---------------------------------------------------
expect_err("read at the end", E.EINVAL, h.pread, 1, size)
expect_err("read across the end", E.EINVAL, h.pread, 4096, size - 2048)
expect_err("read at a huge offset", E.EINVAL, h.pread, 512, 2**64 - 512)
expect_err("write at the end", E.ENOSPC, h.pwrite, b"x", size)
expect_err("write across the end", E.ENOSPC, h.pwrite, b"x" * 4096, size - 1)
expect_err("zero across the end", E.ENOSPC, h.zero, 8192, size - 4096)
expect_err("trim across the end", E.EINVAL, h.trim, 8192, size - 4096)
expect_err("cache past the end", E.EINVAL, h.cache, 4096, size)
expect_err("block status past the end", E.EINVAL, h.block_status, 4096, size,
           lambda *a: 0)
roundtrip(h, size - 4096)  # the last block itself is fine

# --- zero-length requests ----------------------------------------------------
expect_err("zero-length read", E.EINVAL, h.pread, 0, 0)
expect_err("zero-length write", E.EINVAL, h.pwrite, b"", 0)
expect_err("zero-length trim", E.EINVAL, h.trim, 0, 0)
expect_err("zero-length write zeroes", E.EINVAL, h.zero, 0, 0)
expect_err("zero-length cache", E.EINVAL, h.cache, 0, 0)
expect_err("zero-length block status", E.EINVAL, h.block_status, 0, 0, lambda *a: 0)

# --- flags that are not valid for the command --------------------------------
expect_err("NO_HOLE on read", E.EINVAL, h.pread, 512, 0, nbd.CMD_FLAG_NO_HOLE)
expect_err("NO_HOLE on write", E.EINVAL, h.pwrite, b"y" * 512, 0, nbd.CMD_FLAG_NO_HOLE)
expect_err("FAST_ZERO on trim", E.EINVAL, h.trim, 4096, 0, nbd.CMD_FLAG_FAST_ZERO)
expect_err("REQ_ONE on read", E.EINVAL, h.pread, 512, 0, nbd.CMD_FLAG_REQ_ONE)
expect_err("DF on write", E.EINVAL, h.pwrite, b"y" * 512, 0, nbd.CMD_FLAG_DF)
expect_err("unknown flag bit on read", E.EINVAL, h.pread, 512, 0, 1 << 9)
expect_err("unknown flag bit on flush", E.EINVAL, h.flush, 1 << 12)

# --- over-long payloads --------------------------------------------------------
expect_err("read above the maximum payload", E.EOVERFLOW, h.pread, (32 << 20) + 4096, 0)

# FUA is valid on every command once advertised (the server ignores it on reads).
assert h.pread(512, 0, nbd.CMD_FLAG_FUA) is not None
assert h.pread(65536, 0, nbd.CMD_FLAG_DF) is not None
h.zero(65536, 1 << 20, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
checks += 1
roundtrip(h, 12345)  # still usable after every error above

# REQ_ONE: one extent, never longer than asked.
ext = []
h.block_status(1000, 20 << 20, lambda ctx, off, e, err: ext.append(e), nbd.CMD_FLAG_REQ_ONE)
assert len(ext) == 1 and len(ext[0]) == 2 and ext[0][0] <= 1000, ext
checks += 1
h.shutdown()

# --- simple replies (no structured replies negotiated) -----------------------
s = connect(structured=False)
assert not s.get_structured_replies_negotiated()
expect_err("simple: read past the end", E.EINVAL, s.pread, 512, size)
expect_err("simple: DF without structured replies", E.EINVAL, s.pread, 512, 0, nbd.CMD_FLAG_DF)
expect_err("simple: block status without a context", E.EINVAL, s.block_status, 4096, 0,
           lambda *a: 0)
expect_err("simple: read above the maximum payload", E.EINVAL, s.pread, (32 << 20) + 4096, 0)
roundtrip(s, 1 << 20)
s.shutdown()

# --- multi-conn: a write on one connection is read by another ----------------
a, b = connect(), connect()
assert a.can_multi_conn()
data = os.urandom(8192)
a.pwrite(data, 5 << 20)
b.flush()
assert b.pread(8192, 5 << 20) == data
checks += 1
print("nbdsh rw: %d checks passed" % checks)
