#!/usr/bin/env bash
# The cost of TLS: fio (--ioengine=nbd, one TCP connection on 127.0.0.1)
# against hbiss serve without TLS, hbiss serve --tls require (X.509, nbds://),
# and qemu-nbd with --tls-creds (X.509) on a preallocated raw file as the
# peer, plus qemu-nbd without TLS for its own ratio. fio's nbd engine connects
# through libnbd, which for nbds:// without a query takes its certificates
# from $HOME/.pki/libnbd: the script points HOME at a temp dir holding a CA
# and a client certificate made with certtool.
# Prints its parameters and a markdown table with the ratios, and writes
# OUT/tls-results.md.
#
# Usage: bench/nbd/tls-run.sh [HBISS_BINARY]
# Env:   RUNTIME (s per workload, default 10), SIZE (export size, default 1G),
#        DIR (scratch, default a temp dir under /var/tmp), OUT (default
#        bench/nbd/results).
set -euo pipefail
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
HBISS=$(readlink -f "${1:-$ROOT/build/hbiss}")
RUNTIME=${RUNTIME:-10}
SIZE=${SIZE:-1G}
OUT=${OUT:-$HERE/results}
for t in fio qemu-nbd qemu-img certtool nbdinfo python3; do
  command -v $t >/dev/null || { echo "bench: $t is not installed" >&2; exit 1; }
done
[ -x "$HBISS" ] || { echo "bench: no hbiss binary at $HBISS" >&2; exit 1; }
DIR=${DIR:-$(mktemp -d /var/tmp/hbiss-tls-bench.XXXXXX)}
mkdir -p "$DIR" "$OUT"
source "$ROOT/bench/lib.sh"

# ---- certificates: a CA, a server certificate for 127.0.0.1, a client one ----------------------
PKI=$DIR/pki
mkdir -p "$PKI/server" "$PKI/home/.pki/libnbd"
key() { certtool --generate-privkey --key-type=ecdsa --outfile "$1" >/dev/null 2>&1; }
printf 'cn = bench CA\nca\ncert_signing_key\nexpiration_days = 2\n' >"$PKI/ca.info"
key "$PKI/ca-key.pem"
certtool --generate-self-signed --load-privkey "$PKI/ca-key.pem" --template "$PKI/ca.info" \
  --outfile "$PKI/ca-cert.pem" >/dev/null 2>&1
sign() {  # sign KEY CERT TEMPLATE
  key "$1"
  certtool --generate-certificate --load-privkey "$1" --load-ca-certificate "$PKI/ca-cert.pem" \
    --load-ca-privkey "$PKI/ca-key.pem" --template "$3" --outfile "$2" >/dev/null 2>&1
}
printf 'cn = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n' \
  >"$PKI/server.info"
sign "$PKI/server/server-key.pem" "$PKI/server/server-cert.pem" "$PKI/server.info"
cp "$PKI/ca-cert.pem" "$PKI/server/"
printf 'cn = bench\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 2\n' >"$PKI/client.info"
sign "$PKI/home/.pki/libnbd/client-key.pem" "$PKI/home/.pki/libnbd/client-cert.pem" "$PKI/client.info"
cp "$PKI/ca-cert.pem" "$PKI/home/.pki/libnbd/"

build_type=$(grep -s '^CMAKE_BUILD_TYPE:' "$(dirname "$HBISS")/CMakeCache.txt" | cut -d= -f2 || true)
sanitize=$(grep -s '^HBISS_SANITIZE:' "$(dirname "$HBISS")/CMakeCache.txt" | cut -d= -f2 || true)
{
  echo "## Parameters"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- host: $(nproc) CPUs, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "- fio $(fio --version | sed 's/fio-//'), $(qemu-nbd --version | head -n1), GnuTLS $(pkg-config --modversion gnutls 2>/dev/null || echo '?')"
  echo "- hbiss: $HBISS (CMAKE_BUILD_TYPE=${build_type:-unknown}, HBISS_SANITIZE=${sanitize:-OFF})"
  echo "- export size $SIZE, $RUNTIME s per workload after 1 s ramp, one NBD connection over TCP 127.0.0.1"
  echo "- TLS: X.509, ECDSA P-256 certificates from certtool, client certificate sent; cipher as negotiated (logged below)"
  echo "- qemu-nbd: --cache=writeback --aio=threads -e 4 on a fully preallocated raw file; TLS via --object tls-creds-x509,endpoint=server --tls-creds"
  echo "- command: RUNTIME=$RUNTIME SIZE=$SIZE bench/nbd/tls-run.sh $HBISS"
} | tee "$DIR/params.md"
case "${build_type:-}" in
  Debug|"") echo "WARNING: hbiss is not an optimized build (CMAKE_BUILD_TYPE=${build_type:-unknown})";;
esac
[ "${sanitize:-OFF}" = "ON" ] && echo "WARNING: hbiss was built with sanitizers"

WORKLOADS=(
  "seqwrite-1M-qd8 write 1M 8"
  "seqread-1M-qd8 read 1M 8"
  "randwrite-4k-qd32 randwrite 4k 32"
  "randread-4k-qd1 randread 4k 1"
  "randread-4k-qd32 randread 4k 32"
)

wait_tls() {  # wait_tls PORT: until a TLS handshake and GO succeed
  for _ in $(seq 1 200); do
    HOME=$PKI/home nbdinfo --can connect "nbds://127.0.0.1:$1/vm" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench: TLS server on port $1 did not come up" >&2
  exit 1
}

start_server() {  # sets PID, PORT, SCHEME
  PORT=$(free_port)
  case $1 in
    hbiss|hbiss-tls)
      mkdir -p "$DIR/store"
      "$HBISS" --store "$DIR/store" create vm -s "$SIZE" >/dev/null
      local tls=()
      [ "$1" = hbiss-tls ] && tls=(--tls require --tls-certificates "$PKI/server")
      "$HBISS" --store "$DIR/store" serve --listen "127.0.0.1:$PORT" "${tls[@]}" >"$DIR/$1.log" 2>&1 &
      PID=$!;;
    qemu-raw|qemu-raw-tls)
      qemu-img create -q -f raw -o preallocation=full "$DIR/disk.raw" "$SIZE"
      local tls=()
      [ "$1" = qemu-raw-tls ] &&
        tls=(--object "tls-creds-x509,id=tls0,endpoint=server,dir=$PKI/server,verify-peer=off" --tls-creds tls0)
      qemu-nbd -f raw -b 127.0.0.1 -p "$PORT" -x vm -t -e 4 --cache=writeback --aio=threads \
        "${tls[@]}" "$DIR/disk.raw" &
      PID=$!;;
  esac
  case $1 in
    *-tls) SCHEME=nbds; wait_tls "$PORT";;
    *) SCHEME=nbd; wait_port "$PORT" vm;;
  esac
}

stop_server() {
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  rm -rf "$DIR/store" "$DIR/disk.raw"
}

: >"$DIR/all.jsonl"
for s in hbiss hbiss-tls qemu-raw qemu-raw-tls; do
  start_server "$s"
  for w in "${WORKLOADS[@]}"; do
    set -- $w
    name=$1 rw=$2 bs=$3 qd=$4
    HOME=$PKI/home fio --name="$name" --ioengine=nbd --uri="$SCHEME://127.0.0.1:$PORT/vm" \
      --rw="$rw" --bs="$bs" --iodepth="$qd" --size="$SIZE" --time_based --runtime="$RUNTIME" \
      --ramp_time=1 --randrepeat=0 --output-format=json >"$DIR/fio.json" 2>"$DIR/fio.err" ||
      { cat "$DIR/fio.err" >&2; echo "bench: fio failed on $s/$name" >&2; exit 1; }
    python3 - "$DIR/fio.json" "$s" "$name" >>"$DIR/all.jsonl" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])["jobs"][0]
d = j["write"] if j["write"]["io_bytes"] > 0 else j["read"]
print(json.dumps({"server": sys.argv[2], "workload": sys.argv[3], "iops": d["iops"],
                  "mib_s": d["bw_bytes"] / 2**20}))
PY
    tail -n1 "$DIR/all.jsonl"
  done
  [ "$s" = hbiss-tls ] && { grep -m1 -o "TLS established ([^)]*)[^,]*" "$DIR/hbiss-tls.log" |
    sed 's/^/- hbiss session: /' >>"$DIR/params.md" || true; }
  stop_server
done

python3 - "$DIR/all.jsonl" "$DIR/params.md" "$OUT/tls-results.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
val = {(r["server"], r["workload"]): r for r in rows}
servers = ["hbiss", "hbiss-tls", "qemu-raw", "qemu-raw-tls"]
workloads = []
for r in rows:
    if r["workload"] not in workloads:
        workloads.append(r["workload"])
def m(s, w):
    r = val.get((s, w))
    return None if r is None else (r["mib_s"] if w.startswith("seq") else r["iops"])
def f(w, v):
    return "-" if v is None else ("%.0f MiB/s" % v if w.startswith("seq") else "%.0f" % v)
def ratio(a, b):
    return "%.2fx" % (a / b) if a and b else "-"
lines = ["| workload | " + " | ".join(servers) +
         " | hbiss-tls / hbiss | qemu-tls / qemu | hbiss-tls / qemu-tls |",
         "|" + "---|" * (len(servers) + 4)]
for w in workloads:
    cells = [w] + [f(w, m(s, w)) for s in servers]
    cells += [ratio(m("hbiss-tls", w), m("hbiss", w)), ratio(m("qemu-raw-tls", w), m("qemu-raw", w)),
              ratio(m("hbiss-tls", w), m("qemu-raw-tls", w))]
    lines.append("| " + " | ".join(cells) + " |")
text = "## Results (IOPS for 4 KiB, MiB/s for 1 MiB)\n\n" + "\n".join(lines) + "\n"
print(text)
open(sys.argv[3], "w").write(open(sys.argv[2]).read() + "\n" + text)
PY
echo "wrote $OUT/tls-results.md"
