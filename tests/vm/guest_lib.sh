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
