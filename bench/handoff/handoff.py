#!/usr/bin/env python3
"""Handoff latency between two live `hbiss serve`s (bench/handoff/run.sh runs it).

  handoff.py URI_A URI_B HANDOFFS BASELINE OUT_JSON
One python3-libnbd connection to each server, both to the same volume. First BASELINE
rounds of one 4 KiB write + FLUSH through A, which owns the volume after the first: the
cost of a durable write with no handoff (one hflush/hsync round trip to the DataNodes).
Then HANDOFFS rounds alternating B, A, B, ...: each round is one 4 KiB write (the first
write on a server that does not own the volume: its time is the handoff) and a FLUSH. Each
round writes its own block (block = round number), and at the end every block is read back
through both servers and must hold what its round wrote.
Writes OUT_JSON: {"baseline": {"write": [ms...], "flush": [...]}, "handoff": {...}}.
"""
import json
import sys
import time

import nbd

BS = 4096


def block(i):
    return (b"HANDOFF %08d " % i).ljust(BS, b"\xa5")


def main():
    uri_a, uri_b, handoffs, baseline, out = sys.argv[1:6]
    handoffs, baseline = int(handoffs), int(baseline)
    hs = {}
    for name, uri in (("A", uri_a), ("B", uri_b)):
        h = nbd.NBD()
        h.connect_uri(uri)
        hs[name] = h
    res = {"baseline": {"write": [], "flush": []}, "handoff": {"write": [], "flush": [],
                                                                "server": []}}

    def round_trip(h, i, into):
        t0 = time.perf_counter()
        h.pwrite(block(i), i * BS)
        t1 = time.perf_counter()
        h.flush()
        t2 = time.perf_counter()
        into["write"].append((t1 - t0) * 1000)
        into["flush"].append((t2 - t1) * 1000)

    # A takes the volume (not measured), then the baseline on A.
    round_trip(hs["A"], 0, {"write": [], "flush": []})
    n = 1
    for _ in range(baseline):
        round_trip(hs["A"], n, res["baseline"])
        n += 1
    for k in range(handoffs):
        name = "B" if k % 2 == 0 else "A"
        round_trip(hs[name], n, res["handoff"])
        res["handoff"]["server"].append(name)
        n += 1
    bad = 0
    for name, h in hs.items():
        for i in range(n):
            if h.pread(BS, i * BS) != block(i):
                bad += 1
                if bad <= 5:
                    print(f"block {i} read through {name} is wrong", file=sys.stderr)
    for h in hs.values():
        h.shutdown()
    res["blocks"] = n
    res["wrong"] = bad
    with open(out, "w") as f:
        json.dump(res, f)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
