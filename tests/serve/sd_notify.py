# The service manager's side of Type=notify: a datagram socket as NOTIFY_SOCKET, then
# `hbiss serve` started with it. READY=1 must come only once the server accepts NBD
# clients (a handshake at that moment succeeds), RELOADING=1 then READY=1 around a
# SIGHUP, and STOPPING=1 on SIGTERM before the process exits 0.
import os
import re
import signal
import socket
import subprocess
import sys
import time

hbiss, store, work = sys.argv[1], sys.argv[2], sys.argv[3]
path = os.path.join(work, "notify.sock")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
sock.settimeout(20)
conf = os.path.join(work, "serve.toml")
with open(conf, "w") as f:
    f.write('[nbd]\nlisten = "127.0.0.1:0"\n[log]\nlevel = "info"\n')

env = dict(os.environ, NOTIFY_SOCKET=path)
log = open(os.path.join(work, "serve.log"), "w")
proc = subprocess.Popen([hbiss, "--store", store, "serve", "--config", conf], env=env,
                        stdout=log, stderr=subprocess.STDOUT)


def receive():
    msg = sock.recv(4096).decode()
    fields = dict(line.split("=", 1) for line in msg.splitlines() if "=" in line)
    print("notify:", fields)
    return fields


def handshake(port):
    # The NBD server greeting: "NBDMAGIC" then "IHAVEOPT".
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        greeting = b""
        while len(greeting) < 16:
            chunk = c.recv(16 - len(greeting))
            if not chunk:
                break
            greeting += chunk
        return greeting == b"NBDMAGICIHAVEOPT"


try:
    ready = receive()
    assert ready.get("READY") == "1", f"first notification is not READY=1: {ready}"
    # At READY=1 the server already accepts: the port is in STATUS and a client's
    # handshake succeeds at once.
    m = re.search(r"nbd://127\.0\.0\.1:(\d+)", ready.get("STATUS", ""))
    assert m, f"STATUS names no address: {ready}"
    assert handshake(int(m.group(1))), "no NBD greeting right after READY=1"

    proc.send_signal(signal.SIGHUP)
    reloading = receive()
    assert reloading.get("RELOADING") == "1", reloading
    assert "MONOTONIC_USEC" in reloading, reloading
    again = receive()
    assert again.get("READY") == "1", f"no READY=1 after the reload: {again}"

    proc.send_signal(signal.SIGTERM)
    stopping = receive()
    assert stopping.get("STOPPING") == "1", stopping
    rc = proc.wait(timeout=20)
    assert rc == 0, f"exit status {rc} after SIGTERM"
    print("OK")
finally:
    if proc.poll() is None:
        proc.kill()
