#!/usr/bin/env bash
# sd_notify: READY=1 only once the server accepts clients, RELOADING=1/READY=1 around a
# SIGHUP, STOPPING=1 on SIGTERM (sd_notify.py plays the service manager).
TEST_NAME=sd_notify
source "$(dirname "$0")/../nbd/lib.sh"
need python3

hbiss create vm -s 8M >/dev/null
check "sd_notify protocol" timeout 60 python3 "$(dirname "$0")/sd_notify.py" "$HBISS" "$STORE" "$WORK"
grep -q "^OK" "$WORK/check.out" || fail "sd_notify.py did not finish"
cat "$WORK/check.out"
log "PASS ($CHECKS checks)"
