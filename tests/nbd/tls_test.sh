#!/usr/bin/env bash
# NBD over TLS and per-export access rules with real clients (nbd/tls.h,
# nbd/access.h): a CA, a server certificate and client certificates made by
# certtool, a PSK file by psktool; nbdinfo and nbdsh over nbds:// (X.509 and
# PSK), qemu-img/qemu-io with --object tls-creds-x509 / tls-creds-psk; a plain
# client refused under --tls require, a certificate from another CA refused
# under --tls-verify-peer, a wrong PSK key refused, a client that stalls after
# STARTTLS cut off; LIST showing each identity only its exports, a hidden
# export failing like a missing one, a read-only export refusing a write, and
# Unix-socket clients as their own class.
TEST_NAME=tls
source "$(dirname "$0")/lib.sh"
need certtool psktool nbdinfo nbdsh qemu-img qemu-io python3

# ---- credentials -------------------------------------------------------------------------------
PKI=$WORK/pki
mkdir -p "$PKI"/server "$PKI"/alice "$PKI"/evil "$PKI"/qpsk "$PKI"/qbad
key() { certtool --generate-privkey --key-type=ecdsa --outfile "$1" >/dev/null 2>&1; }
ca() {  # ca NAME: a self-signed CA in $PKI/NAME-ca-{key,cert}.pem
  printf 'cn = hbiss test CA %s\nca\ncert_signing_key\nexpiration_days = 2\n' "$1" >"$PKI/$1-ca.info"
  key "$PKI/$1-ca-key.pem"
  certtool --generate-self-signed --load-privkey "$PKI/$1-ca-key.pem" \
    --template "$PKI/$1-ca.info" --outfile "$PKI/$1-ca-cert.pem" >/dev/null 2>&1
}
cert() {  # cert CA DIR PREFIX TEMPLATE-LINES
  printf '%b' "$4" >"$2/$3.info"
  key "$2/$3-key.pem"
  certtool --generate-certificate --load-privkey "$2/$3-key.pem" \
    --load-ca-certificate "$PKI/$1-ca-cert.pem" --load-ca-privkey "$PKI/$1-ca-key.pem" \
    --template "$2/$3.info" --outfile "$2/$3-cert.pem" >/dev/null 2>&1
  cp "$PKI/$1-ca-cert.pem" "$2/ca-cert.pem"
}
ca good
ca other
cert good "$PKI/server" server \
  'cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n'
cert good "$PKI/alice" client 'cn = alice\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 2\n'
# Same name, another CA: must not pass for alice.
cert other "$PKI/evil" client 'cn = alice\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 2\n'
cp "$PKI/good-ca-cert.pem" "$PKI/evil/ca-cert.pem"  # the evil client trusts the real server
[ -s "$PKI/server/server-cert.pem" ] && [ -s "$PKI/evil/client-cert.pem" ] || fail "certtool failed"
PSK=$PKI/keys.psk
psktool -u alice -p "$PSK" >/dev/null
psktool -u bob -p "$PSK" >/dev/null
cp "$PSK" "$PKI/qpsk/keys.psk"                       # qemu wants DIR/keys.psk
sed 's/^alice:./alice:0/; s/^alice:00/alice:11/' "$PSK" >"$PKI/qbad/keys.psk"  # alice's key, changed
cmp -s "$PSK" "$PKI/qbad/keys.psk" && fail "the wrong PSK file equals the right one"
psktool -u mallory -p "$PKI/mallory.psk" >/dev/null  # a user the server does not know

hbiss create vm -s 64M >/dev/null
hbiss create db -s 16M >/dev/null
hbiss create secret -s 8M >/dev/null

# ---- TLS required, X.509 with client certificates, PSK, access rules ---------------------------
start_server --tls require --tls-certificates "$PKI/server" --tls-verify-peer --tls-psk "$PSK" \
  --allow 'vm alice@*' --allow 'db *@* ro' --allow 'secret bob@*'
grep -q "TLS require (X.509" "$WORK/serve.log" || fail "startup line does not name the TLS setup"
X509_ALICE="tls-certificates=$PKI/alice"
nbds() { echo "nbds://$1@127.0.0.1:$PORT/$2?tls-psk-file=$PSK"; }  # PSK URI for user $1

# A client that sends STARTTLS and then nothing is cut off (10 s TLS handshake timeout).
python3 - "$PORT" >"$WORK/stall.out" 2>&1 <<'PY' &
import socket, struct, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.recv(18)
s.sendall(struct.pack(">I", 3) + struct.pack(">QII", 0x49484156454F5054, 5, 0))
r = b""
while len(r) < 20:
    r += s.recv(20 - len(r))
assert struct.unpack(">I", r[12:16])[0] == 1, "STARTTLS not acknowledged"
start = time.time()
s.settimeout(30)
got = s.recv(1)
print("closed after %.1f s, got %r" % (time.time() - start, got))
PY
STALL_PID=$!

check "nbdinfo over X.509 with alice's certificate" nbdinfo --json "nbds://127.0.0.1:$PORT/vm?$X509_ALICE"
grep -q '"export-size": 67108864' "$WORK/check.out" || fail "nbdinfo X.509: wrong size"
grep -q "identity 'alice'" "$WORK/serve.log" || fail "the certificate's CN was not taken as the identity"
check "nbdinfo --list over X.509" nbdinfo --list --json "nbds://127.0.0.1:$PORT/?$X509_ALICE"
python3 - "$WORK/check.out" vm,db <<'PY' || fail "alice's LIST is wrong: $(cat "$WORK/check.out")"
import json, sys
names = sorted(e["export-name"] for e in json.load(open(sys.argv[1]))["exports"])
assert names == sorted(sys.argv[2].split(",")), names
PY
check "nbdinfo --list over PSK as bob" nbdinfo --list --json "$(nbds bob "")"
python3 - "$WORK/check.out" db,secret <<'PY' || fail "bob's LIST is wrong: $(cat "$WORK/check.out")"
import json, sys
names = sorted(e["export-name"] for e in json.load(open(sys.argv[1]))["exports"])
assert names == sorted(sys.argv[2].split(",")), names
PY
check "nbdinfo over PSK as alice" nbdinfo "$(nbds alice vm)"

# A hidden export fails exactly like a missing one.
check_fails "bob opens vm (hidden)" nbdinfo "$(nbds bob vm)"
sed 's/vm/NAME/g' "$WORK/check.out" >"$WORK/hidden.out"
check_fails "bob opens a missing export" nbdinfo "$(nbds bob nosuch)"
sed 's/nosuch/NAME/g' "$WORK/check.out" >"$WORK/missing.out"
grep -q "No such file" "$WORK/hidden.out" || fail "hidden export: unexpected error $(cat "$WORK/hidden.out")"
cmp -s "$WORK/hidden.out" "$WORK/missing.out" ||
  fail "a hidden export is told apart from a missing one: $(cat "$WORK/hidden.out" "$WORK/missing.out")"
grep -q "export 'vm' hidden by the access rules" "$WORK/serve.log" || fail "the refusal is not logged"

# A read-only export: the flag is set and a write (libnbd strict mode off, so it is really sent)
# gets EPERM from the server.
check "bob writes to read-only db" nbdsh -c "
h.set_uri_allow_local_file(True)
h.connect_uri('$(nbds bob db)')" -c '
assert h.is_read_only(), "db is not read-only"
h.set_strict_mode(0)
try:
    h.pwrite(b"x" * 512, 0)
    raise SystemExit("the write succeeded")
except nbd.Error as e:
    assert "EPERM" in str(e), e
'

# qemu over PSK and X.509: write a pattern as alice on vm and read it back.
QPSK="tls-creds-psk,id=tls0,endpoint=client,dir=$PKI/qpsk,username=alice"
QX509="tls-creds-x509,id=tls0,endpoint=client,dir=$PKI/alice"
qopts() { echo "driver=nbd,host=127.0.0.1,port=$PORT,export=$1,tls-creds=tls0"; }
check "qemu-io write over PSK" qemu-io --object "$QPSK" --image-opts "$(qopts vm)" -c 'write -P 0x5a 0 64k'
check "qemu-io read over X.509" qemu-io --object "$QX509" --image-opts "$(qopts vm)" -c 'read -P 0x5a 0 64k'
grep -q "read 65536/65536" "$WORK/check.out" || fail "qemu-io read back: $(cat "$WORK/check.out")"
check "qemu-img info over X.509" qemu-img info --object "$QX509" --image-opts "$(qopts vm)"
grep -q "virtual size: 64 MiB" "$WORK/check.out" || fail "qemu-img info: $(cat "$WORK/check.out")"
check_fails "qemu-io on read-only db" qemu-io --object "$QPSK" --image-opts "$(qopts db)" -c 'write 0 4k'

# Refusals.
check_fails "plain nbdinfo under --tls require" nbdinfo "nbd://127.0.0.1:$PORT/vm"
grep -q "Operation not supported" "$WORK/check.out" || fail "plain nbdinfo: $(cat "$WORK/check.out")"
check_fails "plain qemu-img under --tls require" qemu-img info "nbd://127.0.0.1:$PORT/vm"
grep -q "TLS negotiation required" "$WORK/check.out" || fail "plain qemu-img: $(cat "$WORK/check.out")"
grep -q "server reported: TLS is required" "$WORK/check.out" || fail "qemu-img shows no reason"
grep -q "refused NBD_OPT_GO: TLS is required" "$WORK/serve.log" || fail "plain refusal not logged"
check_fails "a client certificate from another CA" nbdinfo "nbds://127.0.0.1:$PORT/vm?tls-certificates=$PKI/evil"
grep -q "TLS client certificate rejected\|TLS handshake failed" "$WORK/serve.log" ||
  fail "the bad certificate's refusal is not logged"
check_fails "a wrong PSK key (nbdinfo)" nbdinfo "nbds://alice@127.0.0.1:$PORT/vm?tls-psk-file=$PKI/qbad/keys.psk"
check_fails "a wrong PSK key (qemu-img)" qemu-img info \
  --object "tls-creds-psk,id=tls0,endpoint=client,dir=$PKI/qbad,username=alice" --image-opts "$(qopts vm)"
check_fails "an unknown PSK user" nbdinfo "nbds://mallory@127.0.0.1:$PORT/vm?tls-psk-file=$PKI/mallory.psk"
grep -q "a PSK username not in the PSK file" "$WORK/serve.log" || fail "the unknown user is not logged"

wait "$STALL_PID" || fail "stalling client: $(cat "$WORK/stall.out")"
grep -Eq "closed after (9|10|11|12)\.[0-9] s, got b''" "$WORK/stall.out" ||
  fail "a stalled TLS handshake was not cut off at 10 s: $(cat "$WORK/stall.out")"
grep -q "no complete handshake within 10000 ms" "$WORK/serve.log" || fail "the stall is not logged"
CHECKS=$((CHECKS + 1))
stop_server

# ---- TLS on (optional), Unix socket clients as their own class ---------------------------------
SOCK=$WORK/nbd.sock
start_server --socket "$SOCK" --tls on --tls-psk "$PSK" \
  --allow '* unix' --allow 'db 127.0.0.1 ro' --allow 'vm alice@tcp'
check "unix client lists everything" nbdinfo --list --json "nbd+unix:///?socket=$SOCK"
python3 - "$WORK/check.out" db,secret,vm <<'PY' || fail "unix LIST: $(cat "$WORK/check.out")"
import json, sys
names = sorted(e["export-name"] for e in json.load(open(sys.argv[1]))["exports"])
assert names == sorted(sys.argv[2].split(",")), names
PY
check "plain TCP client lists only db" nbdinfo --list --json "nbd://127.0.0.1:$PORT/"
python3 - "$WORK/check.out" db <<'PY' || fail "plain TCP LIST: $(cat "$WORK/check.out")"
import json, sys
names = sorted(e["export-name"] for e in json.load(open(sys.argv[1]))["exports"])
assert names == sorted(sys.argv[2].split(",")), names
PY
check "plain TCP client reads db" nbdinfo "nbd://127.0.0.1:$PORT/db"
grep -q "is_read_only: true" "$WORK/check.out" || fail "db is not read-only over TCP"
check_fails "plain TCP client opens vm" nbdinfo "nbd://127.0.0.1:$PORT/vm"
check "alice over TLS opens vm" nbdinfo "$(nbds alice vm)"
grep -q "is_read_only: false" "$WORK/check.out" || fail "vm is read-only for alice"
check "unix client writes secret" qemu-io -f raw "nbd+unix:///secret?socket=$SOCK" -c 'write -P 7 0 4k'
finish
