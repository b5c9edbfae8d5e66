#!/usr/bin/env bash
# contrib/hbiss: the example serve.toml starts a real server (flags overriding its store
# and address), the unit files pass `systemd-analyze verify`, the libvirt domain XML
# parses (and validates when virt-xml-validate or xmllint is installed) with an NBD TLS
# disk, and the xl disk line's target is an NBD URI that QEMU's client opens.
TEST_NAME=contrib
source "$(dirname "$0")/../nbd/lib.sh"
need python3
CONTRIB=$(readlink -f "$(dirname "$0")/../../contrib/hbiss")

# 1. The example config: every key it sets is known and valid; flags win over it.
hbiss create vm1 -s 8M >/dev/null
start_server --config "$CONTRIB/serve.toml"
grep -q "listening on nbd://127.0.0.1:$PORT" "$WORK/serve.log" || fail "example config not served"
CHECKS=$((CHECKS + 1))

# 2. The xl disk line: parse it as xl does (comma-separated key=value, target last) and
# open its target, pointed at this server, with QEMU's NBD client (qdisk is QEMU).
python3 - "$CONTRIB/xl-disk-nbd.cfg" "$PORT" >"$WORK/xl.out" <<'PY' || fail "xl disk line"
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"^disk = \[ '([^']*)' \]$", text, re.M)
assert m, "no disk = [ '...' ] line"
spec = m.group(1)
head, target = spec.split("target=", 1)
keys = dict(p.strip().split("=", 1) for p in head.split(",") if p.strip())
assert keys == {"format": "raw", "vdev": "xvda", "access": "rw", "backendtype": "qdisk"}, keys
assert target.startswith("nbd://hbiss.example.net:10809/"), target
print(target.replace("hbiss.example.net:10809", "127.0.0.1:" + sys.argv[2]))
PY
CHECKS=$((CHECKS + 1))
if command -v qemu-img >/dev/null; then
  check "qemu-img opens the xl target" qemu-img info "$(cat "$WORK/xl.out")"
  grep -q "virtual size: 8 MiB" "$WORK/check.out" || fail "qemu-img: wrong size for the xl target"
fi
stop_server

# 3. The libvirt domain XML: a network disk with protocol nbd, tls='yes', one host.
python3 - "$CONTRIB/libvirt-domain-nbd-tls.xml" <<'PY' || fail "libvirt XML"
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "domain" and root.get("type") == "kvm"
disks = root.findall("./devices/disk[@type='network']")
assert len(disks) == 1, disks
src = disks[0].find("source")
assert src.get("protocol") == "nbd" and src.get("tls") == "yes" and src.get("name") == "vm1"
hosts = src.findall("host")
assert len(hosts) == 1 and hosts[0].get("port") == "10809"
assert disks[0].find("driver").get("type") == "raw"
assert disks[0].find("target").get("dev") == "vda"
PY
CHECKS=$((CHECKS + 1))
if command -v virt-xml-validate >/dev/null; then
  check "virt-xml-validate" virt-xml-validate "$CONTRIB/libvirt-domain-nbd-tls.xml" domain
elif command -v xmllint >/dev/null; then
  check "xmllint" xmllint --noout "$CONTRIB/libvirt-domain-nbd-tls.xml"
else
  log "neither virt-xml-validate nor xmllint is installed: the XML was only parsed"
fi

# 4. The unit files, with ExecStart pointing at this build (verify checks it exists).
if ! command -v systemd-analyze >/dev/null; then
  log "SKIP of the unit check: systemd-analyze is not installed"
else
  mkdir -p "$WORK/units" "$WORK/bad"
  sed "s|/usr/bin/hbiss|$HBISS|" "$CONTRIB/hbiss.service" >"$WORK/units/hbiss.service"
  cp "$CONTRIB/hbiss.socket" "$WORK/units/"
  # A control: a unit with a bad setting must fail here, or verify cannot judge.
  sed 's/^Type=notify$/Type=notifyy/' "$WORK/units/hbiss.service" >"$WORK/bad/hbiss.service"
  if (cd "$WORK/bad" && systemd-analyze verify ./hbiss.service) >"$WORK/bad.out" 2>&1 &&
     ! grep -q "notifyy" "$WORK/bad.out"; then
    log "SKIP of the unit check: systemd-analyze verify cannot judge units here"
  else
    (cd "$WORK/units" && systemd-analyze verify ./hbiss.service ./hbiss.socket) \
      >"$WORK/verify.out" 2>&1 || { cat "$WORK/verify.out" >&2; fail "systemd-analyze verify"; }
    # verify exits 0 on some warnings: none is allowed.
    [ ! -s "$WORK/verify.out" ] || { cat "$WORK/verify.out" >&2; fail "systemd-analyze warned"; }
    CHECKS=$((CHECKS + 1))
  fi
fi
log "PASS ($CHECKS checks)"
