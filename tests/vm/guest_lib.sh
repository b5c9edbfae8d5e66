# Shared by the VM tests: source after tests/nbd/lib.sh (for fail and skip) and set
# GUEST_DIR. need_guest TOOL...: every tool must be installed and the guest
# (prepare_guest.sh) must be ready in GUEST_DIR; otherwise the test is skipped (77), or
# fails when HBISS_REQUIRE_VM=1.
unavailable() {
  if [ "${HBISS_REQUIRE_VM:-0}" = 1 ]; then
    fail "$* (HBISS_REQUIRE_VM=1, so this is a failure, not a skip)"
  fi
  skip "$* (set HBISS_REQUIRE_VM=1 to make this a failure)"
}

need_guest() {
  local t rc=0
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 ||
      unavailable "$t is not installed (scripts/deps.sh installs it)"
  done
  bash "$(dirname "${BASH_SOURCE[0]}")/prepare_guest.sh" "$GUEST_DIR" || rc=$?
  if [ $rc -eq 77 ]; then
    unavailable "no guest kernel: see the prepare_guest message above"
  elif [ $rc -ne 0 ]; then
    fail "prepare_guest.sh failed (exit $rc)"
  fi
}

# console_verdict WHAT QRC CONSOLE: after a QEMU (named WHAT in messages) exited with QRC,
# writes CONSOLE.txt (the console without CRs) and checks it: QRC is not timeout's (124,
# 137: the guest did not power off within $BOOT_TIMEOUT s), the console holds exactly one
# HBISS-VM-RESULT line, and QRC is 0. Sets VERDICT to that line without its prefix and logs
# it; fails the test otherwise.
console_verdict() {
  local what=$1 qrc=$2 out=$3 n
  tr -d '\r' <"$out" >"$out.txt"
  if [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then
    tail -n 30 "$out.txt" >&2
    fail "$what: the guest did not power off within $BOOT_TIMEOUT s"
  fi
  n=$(grep -a -c '^HBISS-VM-RESULT: ' "$out.txt" || true)
  if [ "$n" -ne 1 ]; then
    tail -n 30 "$out.txt" >&2
    fail "$what: expected one HBISS-VM-RESULT line on the console, found $n"
  fi
  VERDICT=$(grep -a '^HBISS-VM-RESULT: ' "$out.txt" | sed 's/^HBISS-VM-RESULT: //')
  log "$what: $VERDICT"
  [ "$qrc" -eq 0 ] || { tail -n 30 "$out.txt" >&2; fail "$what: QEMU exited with $qrc"; }
}
