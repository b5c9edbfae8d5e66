#!/usr/bin/python3
"""Turns bench/scale/run.sh's results into markdown tables (summary.md).

Usage: summarize.py OUT_DIR COMMIT BUDGET
Reads OUT_DIR/params.md, OUT_DIR/many-*.jsonl (many_volumes.py plus the
server_exit line run.sh appends) and OUT_DIR/big-volume.json
(hbiss_scale_bench --json), whichever exist, and prints markdown.
"""
import glob
import json
import os
import sys

MIB = 2**20


def parse_size(t):
    """'2G' -> bytes; None if t is not a size."""
    mult = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    t = t.strip()
    try:
        if t and t[-1].upper() in mult:
            return int(t[:-1]) * mult[t[-1].upper()]
        return int(t)
    except ValueError:
        return None


def many(path, budget):
    name = os.path.basename(path)[len("many-"):-len(".jsonl")]
    recs = [json.loads(l) for l in open(path) if l.strip()]
    start = next((r for r in recs if r["event"] == "start"), None)
    end = next((r for r in recs if r["event"] == "end"), {})
    ex = next((r for r in recs if r["event"] == "server_exit"), {})
    ms = [r for r in recs if r["event"] == "milestone"]
    mode = start["mode"] if start else "?"
    print(f"#### Run `{name}`: connections {'kept open' if mode == 'keep' else 'closed after the flush'}"
          f", server `ulimit -n {ex.get('fd_limit', '?')}`")
    print()
    print("| volumes written | open connections | VmRSS MiB | VmHWM MiB | threads | open fds |"
          " RSS per volume MiB | failed volumes |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    if start:
        s = start["server"]
        print(f"| 0 (idle server) | 0 | {s['VmRSS'] / MIB:.1f} | {s['VmHWM'] / MIB:.1f} |"
              f" {s['Threads']} | {s['fds']} | - | 0 |")
    for r in ms:
        s = r["server"]
        print(f"| {r.get('written_ok', r['volumes'])} | {r['open_connections']} | {s['VmRSS'] / MIB:.1f} |"
              f" {s['VmHWM'] / MIB:.1f} | {s['Threads']} | {s['fds']} |"
              f" {r['rss_per_volume_mib']:.1f} | {r['failed']} |")
    print()
    notes = [f"budget: {budget}"]
    lim = parse_size(budget.split()[0]) if budget else None
    if lim and ms:
        hwm = max(r["server"]["VmHWM"] for r in ms)
        notes.append(f"peak VmHWM {hwm / MIB:.0f} MiB = {100 * hwm / lim:.0f}% of the budget")
    if end.get("stopped"):
        notes.append(f"**stopped early: {end['stopped']}** after {end.get('volumes_attempted')} volumes")
    if end.get("failed"):
        notes.append(f"{end['failed']} volumes failed, first: `{end['first_failures'][0]['error']}`")
    if ex:
        notes.append(f"SIGTERM to exit: {ex['shutdown_s']:.1f} s, exit code {ex['exit_code']},"
                     f" {ex['log_errors_warnings']} error/warning lines in the server log"
                     f" ({ex['log_emfile']} say 'too many open files')")
    if end.get("mean_volume_write_s"):
        notes.append(f"mean time to connect, write and flush one volume: {end['mean_volume_write_s']:.2f} s")
    print("; ".join(notes) + ".")
    print()


def pct_row(label, p):
    return (f"| {label} | {p['n']} | {p['p50_us']:.1f} | {p['p99_us']:.1f} | {p['p999_us']:.1f} |"
            f" {p['max_us']:.1f} |")


def big(path):
    j = json.load(open(path))
    c = j["config"]
    p1 = j["phase1"]
    print(f"#### A {c['size']} thin volume, {c['write']} of 4 KiB random writes")
    print()
    print(f"`{c['command']}` ({c['build']}). {p1['writes']} writes at {c['rate']} writes/s"
          f" (open loop; achieved {p1['iops']:.0f}/s), Flush every {c['flush_every']} writes from"
          f" its own thread, checkpoint_interval {c['checkpoint_interval']}, clean_threshold"
          f" {c['clean_threshold']}.")
    print()
    print("| checkpoint seq | at s | mapped blocks | bytes | bytes/block | encode ms | write ms |"
          " put ms (inotify) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in p1["checkpoints"]:
        print(f"| {k['seq']} | {k['at_s']:.1f} | {k['mapped_blocks']} | {k['bytes']} |"
              f" {k['bytes_per_block']:.2f} | {k.get('encode_ms', 0):.1f} | {k.get('write_ms', 0):.1f} |"
              f" {k['put_ms']:.1f} |")
    print()
    print("Encode and write: `Info().checkpoint_encode_us` / `checkpoint_write_us` (the engine encodes"
          " from a copy-on-write snapshot of the map, outside the volume lock). A checkpoint's window"
          " runs from its encode start (the Put's temporary file appearing, less encode_us) to its"
          " publish.")
    mb = p1["info"]["mapped_bytes"] // 4096
    fb = p1["final_checkpoint_bytes"]
    print()
    print(f"Close (flush + checkpoint of all {mb} mapped blocks): {p1['close_secs']:.3f} s;"
          f" that checkpoint is {fb} bytes ({fb / mb if mb else 0:.2f} B/block).")
    print()
    lat = p1["latency"]
    print("| 4 KiB write latency, us | writes | p50 | p99 | p99.9 | max |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, label in [("response_no_checkpoint", "response, no checkpoint running"),
                       ("response_during_checkpoint", "response, during a checkpoint (encode to publish)"),
                       ("response_during_encode", "response, during an encode"),
                       ("service_no_checkpoint", "service (the Write call), no checkpoint"),
                       ("service_during_checkpoint", "service, during a checkpoint"),
                       ("flush", "Flush")]:
        print(pct_row(label, lat[key]))
    print()
    print(f"p99 during a checkpoint / without: **{p1['p99_ratio_during_vs_without']:.3g}x**"
          " (goal: at most 2x). Response latency counts from each write's intended start, so a"
          " stall delays every write due during it.")
    print()
    print(f"Extent map after the writes: map_memory_bytes {p1['info']['map_memory_bytes']}"
          f" = **{p1['map_bytes_per_block']:.2f} B per mapped block**; writer process VmRSS"
          f" {p1['rss_after_writes'] / MIB:.0f} MiB (VmHWM {p1['hwm_after_writes'] / MIB:.0f} MiB,"
          f" {p1['sample_bytes'] / MIB:.0f} MiB of it latency samples).")
    rec = j.get("recovery", [])
    if rec:
        r0 = rec[0]["open_warm_writable"]
        m0 = r0["info"]["mapped_bytes"] // 4096
        drss = r0["rss_after_open"] - r0["rss_before"]
        print(f" A fresh process's Open of the {m0} mapped blocks: RSS +{drss / MIB:.1f} MiB"
              f" ({drss / m0 if m0 else 0:.2f} B/block).")
        print()
        print("| log since the newest checkpoint | Open, cold cache, read-only | Open, warm, writable |"
              " (Open - Open at 0) per GiB of log | Close after it | kill -9 writer wrote in |")
        print("|---:|---:|---:|---:|---:|---:|")
        for r in rec:
            gib = r["log_bytes_since_checkpoint"] / 2**30
            per = f"{r['open_secs_minus_empty_log_per_gib']:.2f} s" if gib > 0 else "-"
            print(f"| {r['log']} ({r['log_bytes_since_checkpoint'] / MIB:.0f} MiB) |"
                  f" {r['open_cold_read_only']['open_secs']:.3f} s |"
                  f" {r['open_warm_writable']['open_secs']:.3f} s | {per} |"
                  f" {r['open_warm_writable']['close_secs']:.3f} s | {r['writer']['write_secs']:.1f} s |")
        print()
        print("Goal: under 2 s per GiB of log on the local store.")
    print()


def main():
    out, commit, budget = sys.argv[1], sys.argv[2], sys.argv[3]
    print(f"### Scale results, commit {commit}")
    print()
    params = os.path.join(out, "params.md")
    if os.path.exists(params):
        for line in open(params):
            if line.startswith("- "):
                print(line.rstrip())
        print()
    for p in sorted(glob.glob(os.path.join(out, "many-*.jsonl")), key=os.path.getmtime):
        many(p, budget)
    b = os.path.join(out, "big-volume.json")
    if os.path.exists(b):
        big(b)


if __name__ == "__main__":
    main()
