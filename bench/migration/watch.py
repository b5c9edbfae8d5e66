#!/usr/bin/env python3
"""Timestamps the guest writer's progress lines as the host sees them.

  watch.py WORKDIR OUT
Every 5 ms, reads what each WORKDIR/*.console gained and appends to OUT one line
"HOST_SECONDS FILE_NUMBER CONSOLE" per `HBISS-VM-FILE n` line (tests/vm/init.sh,
hbiss_mode=writer). Ends when WORKDIR/stop exists.
"""
import glob
import os
import re
import sys
import time

work, out_path = sys.argv[1], sys.argv[2]
offsets, partial = {}, {}
pat = re.compile(rb"HBISS-VM-FILE (\d+)")
with open(out_path, "w") as out:
    while not os.path.exists(os.path.join(work, "stop")):
        now = time.time()
        for path in glob.glob(os.path.join(work, "*.console")):
            try:
                with open(path, "rb") as f:
                    f.seek(offsets.get(path, 0))
                    data = f.read()
            except OSError:
                continue
            if not data:
                continue
            offsets[path] = offsets.get(path, 0) + len(data)
            buf = partial.get(path, b"") + data
            lines = buf.split(b"\n")
            partial[path] = lines.pop()
            name = os.path.basename(path)[: -len(".console")]
            for line in lines:
                m = pat.search(line)
                if m:
                    out.write(f"{now:.4f} {int(m.group(1))} {name}\n")
        out.flush()
        time.sleep(0.005)
