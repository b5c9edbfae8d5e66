#!/usr/bin/python3
"""Many volumes in one hbiss server: the NBD client side of bench/scale/run.sh.

Connects to an already running `hbiss serve` over its Unix socket with
libnbd (python3-libnbd), one connection per volume, and for each volume
writes --write-mib MiB in --request-kib requests from offset 0, then sends
NBD_CMD_FLUSH. In --mode keep the connection then stays open until the end, so
every volume written so far is open in the server at once; in --mode close it
is closed at once, and the server closes the volume when its last client
leaves (nbd/volume_export.cc). Volumes are written by --parallel threads of
this one process (one libnbd handle per volume: the client stays one process
however many volumes there are).

After each milestone (--milestones, e.g. 1,10,50,100,200 volumes written) it
waits --settle seconds and samples the server: VmRSS and VmHWM from
/proc/PID/status, its thread count, its open descriptors (/proc/PID/fd), and
the host's MemAvailable. Each sample is one JSON line on stdout (and in
--out); a human-readable row goes to stderr.

It stops early, and says so, when the host's MemAvailable drops below
--min-avail-mib (the machine is shared) or the server exits. A volume whose
connect, write or flush fails (or connects not within --connect-timeout) is
counted with its error, and the run goes on, up to --max-failures.

Not a test: nothing is asserted. Run it through bench/scale/run.sh, which
creates the volumes and starts the server.
"""
import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import nbd


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
            elif k == "Threads":
                out[k] = int(v)
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", required=True, help="the server's Unix socket")
    ap.add_argument("--server-pid", type=int, required=True)
    ap.add_argument("--names", required=True, help="file with one volume name per line")
    ap.add_argument("--mode", choices=["keep", "close"], default="keep")
    ap.add_argument("--write-mib", type=int, default=32)
    ap.add_argument("--request-kib", type=int, default=1024)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--milestones", default="1,10,50,100,200")
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--min-avail-mib", type=int, default=3072)
    ap.add_argument("--connect-timeout", type=float, default=10.0)
    ap.add_argument("--max-failures", type=int, default=6, help="stop after this many failed volumes")
    ap.add_argument("--out", help="also append the JSON lines here")
    a = ap.parse_args()

    names = [n.strip() for n in open(a.names) if n.strip()]
    milestones = sorted({int(m) for m in a.milestones.split(",") if m and int(m) <= len(names)})
    if not milestones or milestones[-1] != len(names):
        milestones.append(len(names))
    out = open(a.out, "a") if a.out else None
    lock = threading.Lock()
    handles = []  # kept open in --mode keep
    failures = []
    counts = {"attempted": 0, "ok": 0}
    stop = {"why": None}
    chunk = a.request_kib * 1024
    nreq = a.write_mib * 1024 * 1024 // chunk
    bufs = threading.local()

    def emit(rec):
        line = json.dumps(rec)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    def one(name):
        if stop["why"]:
            return
        if mem_available() < a.min_avail_mib << 20:
            stop["why"] = f"host MemAvailable below {a.min_avail_mib} MiB"
            return
        with lock:
            counts["attempted"] += 1
        if not hasattr(bufs, "b"):
            bufs.b = os.urandom(chunk)
        h = nbd.NBD()
        t0 = time.monotonic()
        try:
            h.set_export_name(name)
            # With its descriptors used up the server cannot accept, and a
            # blocking connect would wait in its backlog for ever.
            h.aio_connect_unix(a.socket)
            deadline = time.monotonic() + a.connect_timeout
            while h.aio_is_connecting():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no handshake within {a.connect_timeout} s")
                h.poll(100)
            if not h.aio_is_ready():
                raise TimeoutError("the connection failed")
            for i in range(nreq):
                h.pwrite(bufs.b, i * chunk)
            h.flush()
        except (nbd.Error, TimeoutError) as e:
            with lock:
                failures.append({"volume": name, "error": str(e)})
                if len(failures) >= a.max_failures:
                    stop["why"] = f"{len(failures)} volumes failed"
            del h  # closes the handle and its socket
            return
        secs = time.monotonic() - t0
        with lock:
            counts["ok"] += 1
        if a.mode == "keep":
            with lock:
                handles.append(h)
        else:
            h.shutdown()
            del h
        return secs

    base = proc_status(a.server_pid)
    emit({"event": "start", "mode": a.mode, "volumes": 0, "server": base,
          "mem_available": mem_available()})
    print(f"  {'volumes':>7} {'open conns':>10} {'VmRSS MiB':>10} {'VmHWM MiB':>10} "
          f"{'threads':>8} {'fds':>6} {'MiB/vol':>8} {'failed':>6} {'secs':>6}",
          file=sys.stderr, flush=True)
    done = 0
    t_start = time.monotonic()
    write_secs = []
    with ThreadPoolExecutor(max_workers=a.parallel) as ex:
        for m in milestones:
            for r in ex.map(one, names[done:m]):
                if r is not None:
                    write_secs.append(r)
            done = m
            if stop["why"] is None and not os.path.exists(f"/proc/{a.server_pid}/status"):
                stop["why"] = "the server exited"
            if stop["why"] == "the server exited":
                break
            time.sleep(a.settle)
            try:
                s = proc_status(a.server_pid)
            except FileNotFoundError:
                stop["why"] = "the server exited"
                break
            ok = counts["ok"]
            per = (s["VmRSS"] - base["VmRSS"]) / ok / 2**20 if ok else 0
            rec = {"event": "milestone", "mode": a.mode, "volumes": done,
                   "attempted": counts["attempted"], "written_ok": ok,
                   "open_connections": len(handles), "failed": len(failures),
                   "server": s, "rss_per_volume_mib": per, "mem_available": mem_available(),
                   "elapsed_s": time.monotonic() - t_start}
            emit(rec)
            print(f"  {ok:>7} {len(handles):>10} {s['VmRSS'] / 2**20:>10.1f} "
                  f"{s['VmHWM'] / 2**20:>10.1f} {s['Threads']:>8} {s['fds']:>6} {per:>8.1f} "
                  f"{len(failures):>6} {rec['elapsed_s']:>6.1f}", file=sys.stderr, flush=True)
            if stop["why"]:
                break
    end = {"event": "end", "mode": a.mode, "volumes_attempted": counts["attempted"],
           "failed": len(failures), "first_failures": failures[:5], "stopped": stop["why"],
           "mean_volume_write_s": sum(write_secs) / len(write_secs) if write_secs else 0}
    emit(end)
    if stop["why"]:
        print(f"  stopped early: {stop['why']}", file=sys.stderr)
    if failures:
        print(f"  {len(failures)} volumes failed; first: {failures[0]}", file=sys.stderr)
    for h in handles:
        try:
            h.shutdown()
        except nbd.Error:
            pass
    handles.clear()


if __name__ == "__main__":
    main()
