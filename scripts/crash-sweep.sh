#!/usr/bin/env bash
# The full crash-point sweep (not run by CI; README "Crash-point sweep").
#
# The per-commit test (TestCrashMatrix in cmd/pkcshsm_mk_change/crashmatrix)
# kills once per failpoint with few keys. This sweep kills at EVERY hit of
# every failpoint (every batch of every pass, every write of every
# command, every event in the daemon and in an application) of the
# finalize, cancel and rollback scenarios, with more keys per token, and
# fails if a failpoint in the code is reached by no scenario. After each
# kill the operation is completed the way 'pkcshsm_mk_change list'
# advises and every key and operation file is verified.
#
#   CRASH_KEYS   extra AES keys per token (default 10; CI uses 2)
#   CRASH_PAGE   key objects per batch of a pass (default 2)
#   TIMEOUT      go test timeout (default 3h)
#
# Extra arguments go to go test, e.g. -run 'TestCrashMatrix/(trace|kill)/cancel'
# for one scenario. Prints the number of points and kills at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export CRASH_SWEEP=1 CRASH_KEYS=${CRASH_KEYS:-10} CRASH_PAGE=${CRASH_PAGE:-2}
log=$(mktemp "${TMPDIR:-/tmp}/crash-sweep.XXXXXX")
set +e
go test -count=1 -timeout "${TIMEOUT:-3h}" -run TestCrashMatrix -v "$@" ./cmd/pkcshsm_mk_change/crashmatrix/ >"$log" 2>&1
rc=$?
set -e
grep -E '^\s*--- FAIL|crash matrix:|failpoints in the code' "$log" || true
echo "full log: $log"
exit $rc
