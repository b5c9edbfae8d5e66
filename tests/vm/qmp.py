#!/usr/bin/env python3
"""A minimal QMP client for the VM tests (QEMU's JSON monitor on a Unix socket).

  qmp.py SOCKET COMMAND [ARGUMENTS_JSON]
      Runs one command and prints its "return" value as JSON. Exit 1 with QEMU's
      error on stderr if it fails.
  qmp.py SOCKET --wait-migration STATUS[,STATUS...] [TIMEOUT_S]
      Polls query-migrate every 50 ms until its status is one of STATUS (for example
      completed, pre-switchover, cancelled, failed) and prints the reply. Exit 1 on timeout
      or when the status is "failed" without being asked for.
"""
import json
import socket
import sys
import time


class Qmp:
    def __init__(self, path, timeout=30):
        deadline = time.time() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(timeout)
        self.buf = b""
        self._read()  # the greeting
        self.run("qmp_capabilities")

    def _read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("QMP socket closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def run(self, command, arguments=None):
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._read()
            if "event" in reply:
                continue
            if "error" in reply:
                raise RuntimeError(f"{command}: {reply['error']}")
            return reply.get("return")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    qmp = Qmp(sys.argv[1])
    if sys.argv[2] == "--wait-migration":
        want = set(sys.argv[3].split(","))
        deadline = time.time() + (float(sys.argv[4]) if len(sys.argv) > 4 else 120)
        while True:
            info = qmp.run("query-migrate")
            status = info.get("status")
            if status in want:
                print(json.dumps(info))
                return
            if status == "failed":
                sys.exit(f"migration failed: {json.dumps(info)}")
            if time.time() > deadline:
                sys.exit(f"migration status {status}, waited for {sorted(want)}")
            time.sleep(0.05)
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    try:
        print(json.dumps(qmp.run(sys.argv[2], args)))
    except RuntimeError as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
