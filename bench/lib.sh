# Shared by the NBD benchmark scripts: source it after setting DIR (the
# scratch directory, removed on exit). PID names the server to stop on exit.
PID=""
cleanup() {
  if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$DIR"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_port PORT EXPORT: until an NBD server answers there (exits after 10 s).
wait_port() {
  for _ in $(seq 1 200); do
    nbdinfo --can connect "nbd://127.0.0.1:$1/$2" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench: server on port $1 did not come up" >&2
  exit 1
}
