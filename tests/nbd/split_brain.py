# The clients and checks of split_brain_test.sh (issue 9: two live servers, one volume).
#
#   split_brain.py writer URI NAME LOG SECONDS SEED OWN_LO OWN_HI SHARED_LO SHARED_HI
#       Writes 4 KiB blocks through one NBD connection for SECONDS: bursts of 1-16 writes,
#       80% to its own blocks [OWN_LO, OWN_HI), 20% to the shared ones, most bursts ending
#       with a FLUSH, with short pauses. Every request is logged to LOG as it ends.
#   split_brain.py stream URI NAME LOG LO HI STOPFILE [HOLDFILE]
#       Writes blocks LO, LO+1, ... once each (the 2nd of every 4 with FUA, all of them once
#       STOPFILE.fua exists; a FLUSH after every 4th), 20 per second, until
#       STOPFILE exists or HI is reached; keeps going after errors (it is the client of a
#       server that is stopped, then fenced). Then keeps the connection until HOLDFILE exists.
#   split_brain.py sample HBISS STORE VOLUME LOG STOPFILE
#       Runs `hbiss status VOLUME --json` back to back until STOPFILE exists; logs each.
#   split_brain.py check-status LOG T_FROM T_TO [--max-none=S] NAME=PEER...
#       The status samples begun in [T_FROM, T_TO]: every one succeeded, shows one owner
#       (one of the given servers, with its peer address) or none, the epoch never goes
#       down, and no epoch stays owner-less for over S s (default 5; 0: no limit) between
#       two samples. Prints the epochs,
#       owners and how often a live server did not answer `status`'s PING.
#   split_brain.py check IMAGE PHASE T_STOP T_CONT LOG...
#       The model: IMAGE (the whole volume as a reader sees it) against every request the
#       writers logged. PHASE 1 (no server failed): every block holds the value of a write
#       that no other acknowledged write to it followed in real time; blocks no one wrote are
#       zeros. PHASE 2 (the first server was SIGSTOPped at T_STOP, continued at T_CONT) adds,
#       for the stream writer's blocks: nothing written after T_STOP is seen; what was written
#       and flushed before T_STOP is; its requests begun after T_CONT all failed.
#   split_brain.py latency LOG...
#       p50/p99/max of the writes and flushes in the logs.
# Block content: "HBSB", the writer's name (1 byte), the block (u32), the write's sequence
# number (u64), then bytes derived from those: a torn, misplaced or stale block never parses
# as the write it claims to be.
import json
import os
import random
import struct
import subprocess
import sys
import time

BS = 4096
HDR = struct.Struct(">4scIQ")


def content(name, block, seq):
    head = HDR.pack(b"HBSB", name.encode(), block, seq)
    return head + random.Random(f"{name}/{block}/{seq}").randbytes(BS - HDR.size)


def parse(blk, block):
    """(name, seq) of a whole block written for `block`, None for zeros, 'bad' otherwise."""
    if blk == bytes(BS):
        return None
    magic, name, b, seq = HDR.unpack_from(blk)
    if magic != b"HBSB" or b != block:
        return "bad"
    name = name.decode(errors="replace")
    if blk != content(name, block, seq):
        return "bad"
    return (name, seq)


class OpLog:
    def __init__(self, path, name):
        self.f = open(path, "a")
        self.name = name

    def run(self, op, fn, block=None, seq=None, fua=False):
        t0 = time.time()
        err = None
        try:
            fn()
        except Exception as e:  # nbd.Error, or the connection gone
            err = str(e) or type(e).__name__
        t1 = time.time()
        rec = {"w": self.name, "op": op, "t0": t0, "t1": t1, "ok": err is None}
        if block is not None:
            rec.update(block=block, seq=seq)
        if fua:
            rec["fua"] = True
        if err is not None:
            rec["err"] = err
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        return err is None


def connect(uri):
    import nbd
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def cmd_writer(uri, name, log, seconds, seed, own_lo, own_hi, sh_lo, sh_hi):
    rng = random.Random(int(seed))
    seconds, own_lo, own_hi, sh_lo, sh_hi = float(seconds), int(own_lo), int(own_hi), int(sh_lo), int(sh_hi)
    h = connect(uri)
    ops = OpLog(log, name)
    deadline = time.time() + seconds
    seq = 0
    errors = 0
    while time.time() < deadline and errors < 20:
        for _ in range(rng.randint(1, 16)):
            b = rng.randrange(own_lo, own_hi) if rng.random() < 0.8 else rng.randrange(sh_lo, sh_hi)
            seq += 1
            data = content(name, b, seq)
            if not ops.run("write", lambda: h.pwrite(data, b * BS), b, seq):
                errors += 1
        if rng.random() < 0.7:
            if not ops.run("flush", h.flush):
                errors += 1
        time.sleep(rng.uniform(0, 0.05))
    if ops.run("flush", h.flush):
        pass
    else:
        errors += 1
    try:
        h.shutdown()
    except Exception:
        pass
    return 0 if errors == 0 else 1


def cmd_stream(uri, name, log, lo, hi, stopfile, holdfile=None):
    h = connect(uri)
    ops = OpLog(log, name)
    lo, hi = int(lo), int(hi)
    seq = 0
    for b in range(lo, hi):
        if os.path.exists(stopfile):
            break
        seq += 1
        data = content(name, b, seq)
        # FUA: acknowledged means durable, like a write and a FLUSH. Every write is FUA once
        # STOPFILE.fua exists (the test creates it right before it stops the server).
        if seq % 4 == 2 or os.path.exists(stopfile + ".fua"):
            import nbd
            ops.run("write", lambda: h.pwrite(data, b * BS, nbd.CMD_FLAG_FUA), b, seq, True)
        else:
            ops.run("write", lambda: h.pwrite(data, b * BS), b, seq)
        if seq % 4 == 0:
            ops.run("flush", h.flush)
        time.sleep(0.05)
    while holdfile and not os.path.exists(holdfile):
        time.sleep(0.1)
    try:
        h.shutdown()
    except Exception:
        pass
    return 0


def cmd_sample(hbiss, store, volume, log, stopfile):
    with open(log, "a") as f:
        while not os.path.exists(stopfile):
            t0 = time.time()
            try:
                p = subprocess.run([hbiss, "--store", store, "status", volume, "--json"],
                                   capture_output=True, text=True, timeout=30)
                rc, out, err = p.returncode, p.stdout, p.stderr
            except subprocess.TimeoutExpired:
                rc, out, err = -1, "", "timed out after 30 s"
            f.write(json.dumps({"t0": t0, "t1": time.time(), "rc": rc, "out": out,
                                "err": err[-500:]}) + "\n")
            f.flush()
            time.sleep(0.2)
    return 0


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def cmd_check_status(log, t_from, t_to, *servers):
    t_from, t_to = float(t_from), float(t_to)
    max_none = 5.0
    if servers and servers[0].startswith("--max-none="):
        max_none = float(servers[0].split("=", 1)[1])
        servers = servers[1:]
    peers = dict(s.split("=", 1) for s in servers)
    samples = [s for s in read_log(log) if t_from <= s["t0"] <= t_to]
    errors = []
    if not samples:
        errors.append("no status sample in the interval")
    last_epoch = -1
    owners = []  # (t, epoch, owner name or None)
    for s in samples:
        if s["rc"] != 0:
            errors.append(f"status at {s['t0']:.1f} exited {s['rc']}: {s['err'].strip()}")
            continue
        try:
            j = json.loads(s["out"])
        except ValueError:
            errors.append(f"status at {s['t0']:.1f} printed no JSON: {s['out'][:200]!r}")
            continue
        epoch = j.get("epoch")
        if not isinstance(epoch, int):
            errors.append(f"status at {s['t0']:.1f}: no epoch: {s['out'][:200]}")
            continue
        if epoch < last_epoch:
            errors.append(f"epoch went down from {last_epoch} to {epoch} at {s['t0']:.1f}")
        last_epoch = max(last_epoch, epoch)
        owner = j.get("owner")
        if owner is None:
            owners.append((s["t0"], epoch, None))
            continue
        if not isinstance(owner, dict) or owner.get("server") not in peers:
            errors.append(f"status at {s['t0']:.1f}: owner is not one server of "
                          f"{sorted(peers)}: {owner!r}")
            continue
        if owner.get("peer") != peers[owner["server"]]:
            errors.append(f"status at {s['t0']:.1f}: owner {owner['server']} with peer "
                          f"{owner.get('peer')}, its peer address is {peers[owner['server']]}")
        owners.append((s["t0"], epoch, owner["server"]))
    # Owner-less stretches: consecutive samples with no owner at one epoch (at another epoch
    # someone owned the volume in between).
    longest, start, start_epoch = 0.0, None, None
    for t, e, o in owners:
        if o is not None:
            start = None
        elif start is None or e != start_epoch:
            start, start_epoch = t, e
        else:
            longest = max(longest, t - start)
    if max_none > 0 and longest > max_none:
        errors.append(f"no owner for {longest:.1f} s on end at one epoch while the writers wrote")
    silent = {}
    for s in samples:
        try:
            for o in json.loads(s["out"]).get("open", []):
                if not o.get("answers"):
                    silent[o.get("server")] = silent.get(o.get("server"), 0) + 1
        except ValueError:
            pass
    changes = sum(1 for a, b in zip(owners, owners[1:]) if a[2] != b[2])
    epochs = [e for _, e, _ in owners]
    none = sum(1 for _, _, o in owners if o is None)
    print(f"{len(samples)} status samples: epoch {epochs[0] if epochs else '?'} -> "
          f"{epochs[-1] if epochs else '?'}, {changes} owner changes seen, "
          f"{none} samples with no owner (longest {longest:.1f} s), last owner "
          f"{owners[-1][2] if owners else '?'}; servers listed as not answering: "
          f"{silent or 'none'}")
    if errors:
        print("\n".join(errors[:20]))
        return 1
    return 0


def cmd_check(image, phase, t_stop, t_cont, *logs):
    phase, t_stop, t_cont = int(phase), float(t_stop), float(t_cont)
    ops = []
    for log in logs:
        ops += read_log(log)
    with open(image, "rb") as f:
        data = f.read()
    errors = []
    writes = {}  # block -> [write records]
    for o in ops:
        if o["op"] == "write":
            writes.setdefault(o["block"], []).append(o)
    # The writers through the server that was stopped (SPLIT_BRAIN_STOPPED, phase 2) get
    # their own rules below. The successful flushes of each writer:
    flushes = {}
    for o in ops:
        if o["op"] == "flush" and o["ok"]:
            flushes.setdefault(o["w"], []).append(o)

    def flushed_before(w, t):
        """True when a FLUSH of w's connection that began after w ended ended before t."""
        return any(f["t0"] >= w["t1"] and f["t1"] <= t for f in flushes.get(w["w"], []))

    nblocks = len(data) // BS
    counts = {"zero": 0, "held": 0, "raced": 0}
    for b in range(nblocks):
        blk = data[b * BS:(b + 1) * BS]
        got = parse(blk, b)
        ws = writes.get(b, [])
        if got == "bad":
            errors.append(f"block {b}: torn, misplaced or corrupt ({blk[:24].hex()})")
            continue
        if not ws:
            if got is not None:
                errors.append(f"block {b}: no one wrote it, it holds {got}")
            else:
                counts["zero"] += 1
            continue
        by_id = {(w["w"], w["seq"]): w for w in ws}
        if got is not None and got not in by_id:
            errors.append(f"block {b}: holds {got}, which no logged write put there")
            continue
        if phase == 2:
            # Writes begun after the stop never reach a reader; nor do failed ones begun
            # after it. Writes that failed or were in flight or unflushed at the stop may.
            if got is not None and by_id[got]["t0"] > t_stop and by_id[got]["w"] in STOPPED:
                errors.append(f"block {b}: holds {got}, written through the stopped server "
                              f"{by_id[got]['t0'] - t_stop:.1f} s after its SIGSTOP")
                continue
        # Candidates: acknowledged writes that no other acknowledged write followed; under
        # phase 2, writes of the stopped server that were not flushed before the stop only
        # "may" count, and so may any write that failed.
        def must(w):
            if not w["ok"]:
                return False
            if phase == 2 and w["w"] in STOPPED:
                # A FUA write the server acknowledged is durable whenever it was acknowledged
                # (one begun after the stop must not be acknowledged at all: checked below).
                if w.get("fua") and w["t0"] <= t_stop:
                    return True
                return w["t1"] <= t_stop and flushed_before(w, t_stop)
            return True
        musts = [w for w in ws if must(w)]
        mays = [w for w in ws if not must(w) and not (phase == 2 and w["w"] in STOPPED
                                                       and w["t0"] > t_stop)]
        latest_must = max((w["t1"] for w in musts), default=None)
        # A block may hold any write that did not end before the latest must-write began.
        allowed = set()
        if latest_must is None:
            allowed.add(None)
        for w in musts + mays:
            later = [m for m in musts if m is not w and m["t0"] > w["t1"]]
            if not later:
                allowed.add((w["w"], w["seq"]))
        if got not in allowed:
            want = sorted(a for a in allowed if a is not None)
            errors.append(f"block {b}: holds {got}, allowed {want[:4]}"
                          + (" or zeros" if None in allowed else "")
                          + " (stale or lost acknowledged write)")
            continue
        counts["raced" if len(allowed) > 1 else "held"] += 1
    if phase == 2:
        for o in ops:
            if (o["w"] in STOPPED and o.get("fua") and o["ok"] and t_stop < o["t0"] < t_cont):
                seen = parse(data[o["block"] * BS:(o["block"] + 1) * BS], o["block"]) == (o["w"], o["seq"])
                errors.append(f"{o['w']}: a FUA write sent {o['t0'] - t_stop:.1f} s into the "
                              f"stop was acknowledged {o['t1'] - t_cont:.1f} s after the SIGCONT"
                              + (" and a reader sees it (written after the fence)" if seen else
                                 " and a reader does not see it: acknowledged as durable, lost"))
            if o["w"] in STOPPED and o["t0"] >= t_cont and o["ok"]:
                seen = o["op"] == "write" and parse(
                    data[o["block"] * BS:(o["block"] + 1) * BS], o["block"]) == (o["w"], o["seq"])
                errors.append(f"{o['w']}: a {o['op']} begun {o['t0'] - t_cont:.1f} s after "
                              "the SIGCONT succeeded (the fenced server acknowledged it"
                              + ("; a reader sees it" if seen else
                                 "; a reader does not see it: silently lost" if o["op"] == "write"
                                 else "") + ")")
    print(f"phase {phase}: {nblocks} blocks: {counts['held']} hold their one last write, "
          f"{counts['raced']} one of racing last writes, {counts['zero']} zeros (never "
          f"written)" + (f"; {len(errors)} wrong" if errors else ""))
    if errors:
        print("\n".join(errors[:30]))
        return 1
    return 0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def cmd_latency(*logs):
    for log in logs:
        ops = read_log(log)
        for op in ("write", "flush"):
            lat = [(o["t1"] - o["t0"]) * 1000 for o in ops if o["op"] == op]
            bad = sum(1 for o in ops if o["op"] == op and not o["ok"])
            if lat:
                print(f"{os.path.basename(log)}: {len(lat)} {op}s ({bad} failed), latency p50 "
                      f"{pct(lat, .5):.2f} ms, p99 {pct(lat, .99):.1f} ms, max {max(lat):.0f} ms")
    return 0


STOPPED = set(os.environ.get("SPLIT_BRAIN_STOPPED", "").split(",")) - {""}

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    fn = {"writer": cmd_writer, "stream": cmd_stream, "sample": cmd_sample,
          "check-status": cmd_check_status, "check": cmd_check, "latency": cmd_latency}[cmd]
    sys.exit(fn(*args))
