#!/usr/bin/env bash
# nbdsh with strict mode off: out-of-range reads and writes, bad flags and
# zero-length requests get the errors the spec requires; read-only serving
# answers EPERM. The checks are in nbdsh_checks.py.
TEST_NAME=nbdsh
source "$(dirname "$0")/lib.sh"
need nbdsh
HERE=$(cd "$(dirname "$0")" && pwd)

hbiss create vm -s 64M >/dev/null
hbiss create other -s 1M >/dev/null
start_server
check "nbdsh checks (rw)" env URI="$(uri vm)" MODE=rw \
  nbdsh -c "exec(open('$HERE/nbdsh_checks.py').read())"
cat "$WORK/check.out"
stop_server
start_server --read-only
check "nbdsh checks (read-only)" env URI="$(uri vm)" MODE=ro \
  nbdsh -c "exec(open('$HERE/nbdsh_checks.py').read())"
cat "$WORK/check.out"
finish
